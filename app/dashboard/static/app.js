/* crisis-supply dashboard: the little the pages need beyond HTML forms.
   Loaded as a file (the Content-Security-Policy allows no inline script). */
(function () {
  "use strict";

  var POLL_MS = 1000;

  function text(el, value) {
    if (el) { el.textContent = value; }
  }

  /* Live run progress: polls the dashboard's progress route (authenticated by the session cookie)
     until the run has finished, then offers the plan. */
  function watchRun(box) {
    var url = box.getAttribute("data-progress-url");
    var field = function (name) { return box.querySelector('[data-field="' + name + '"]'); };
    var bar = box.querySelector("progress");

    function show(p) {
      var status = field("status");
      text(status, p.status.replace(/_/g, " "));
      if (status) { status.className = "badge status-" + p.status; }
      text(field("stage"), p.stage || "–");
      text(field("percent"), Math.round(p.percent) + "%");
      text(field("message"), p.message || "");
      text(field("error"), p.error || "");
      if (bar) { bar.value = p.percent; bar.textContent = Math.round(p.percent) + "%"; }
      ["started", "finished_at", "attempts"].forEach(function (name) {
        text(document.querySelector('[data-run-field="' + name + '"]'), p[name]);
      });
      if (p.finished) {
        box.setAttribute("data-finished", "true");
        var hide = box.querySelector("[data-hide-when-finished]");
        if (hide) { hide.hidden = true; }
        var plan = field("plan");
        if (plan && p.plan_url && !plan.querySelector("a")) {
          var a = document.createElement("a");
          a.href = p.plan_url;
          a.className = "button primary";
          a.textContent = "Review the plan";
          plan.appendChild(a);
        }
      }
    }

    function poll() {
      fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          var type = r.headers.get("Content-Type") || "";
          if (!r.ok || type.indexOf("application/json") !== 0) { throw new Error("signed out or gone"); }
          return r.json();
        })
        .then(function (p) {
          show(p);
          if (!p.finished) { window.setTimeout(poll, POLL_MS); }
        })
        .catch(function () {
          text(field("message"), "Live progress stopped; reload the page to see the latest state.");
        });
    }

    if (box.getAttribute("data-finished") !== "true") { window.setTimeout(poll, POLL_MS); }
  }

  /* A driver's delivery form: a shortfall reason is needed exactly when less arrived than shipped. */
  function guardReceipts(form) {
    form.addEventListener("input", function (ev) {
      var input = ev.target;
      if (!input.name || input.name.indexOf("received[") !== 0) { return; }
      var id = input.name.slice(9, -1);
      var reason = form.querySelector('select[name="shortfall[' + id + ']"]');
      var short = input.value !== "" && Number(input.value) < Number(input.max);
      if (reason) { reason.required = short; reason.closest(".receipt").classList.toggle("short", short); }
    });
  }

  /* Buttons that submit a form are disabled once pressed, so a double click posts once. */
  function oncePerSubmit(form) {
    form.addEventListener("submit", function () {
      var buttons = form.querySelectorAll("button[type=submit]");
      window.setTimeout(function () {
        for (var i = 0; i < buttons.length; i++) { buttons[i].disabled = true; }
      }, 0);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var boxes = document.querySelectorAll("[data-progress-url]");
    for (var i = 0; i < boxes.length; i++) { watchRun(boxes[i]); }
    var deliveries = document.querySelectorAll("form.delivery");
    for (var j = 0; j < deliveries.length; j++) { guardReceipts(deliveries[j]); }
    var forms = document.querySelectorAll('form[method="post"]');
    for (var k = 0; k < forms.length; k++) { oncePerSubmit(forms[k]); }
  });
})();
