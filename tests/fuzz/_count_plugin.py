import collections, time
import schemathesis
COUNTS = collections.Counter()
STATUS = collections.defaultdict(collections.Counter)
TIMES = collections.Counter()
_start = {}
@schemathesis.hook
def after_call(context, case, response):
    phase = case.meta.phase.name.value if case.meta else "?"
    COUNTS[(case.operation.label, phase)] += 1
    STATUS[case.operation.label][response.status_code] += 1
    TIMES[case.operation.label] += response.elapsed if hasattr(response, "elapsed") else 0
def pytest_sessionfinish(session):
    ops = sorted({op for op, _ in COUNTS})
    with open("/tmp/fuzz_counts.txt", "w") as f:
        for op in ops:
            per = {ph: n for (o, ph), n in COUNTS.items() if o == op}
            f.write(f"{op}\t{per}\t{dict(STATUS[op])}\t{TIMES[op]:.1f}s\n")
