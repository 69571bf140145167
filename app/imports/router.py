"""/v1/imports/{kind} (upload a CSV or XLSX file) and /v1/exports/… (download one).

Imports: all-or-nothing; 201 `{kind, rows, created}`, or 422 problem+json whose `errors` list every bad
cell as `{row, column, message}` (nothing written). Who may import follows who may write that kind
through the API (SPEC §1): organisations admin; items and sites admin and logistics; depot inventory
logistics; requests and pledges logistics, on behalf of the organisations named in the file.
Exports: admin and logistics.
"""

# No `from __future__ import annotations` here: the per-kind routes are built in a loop and FastAPI
# must see each route's own Allow(...) annotation, not a string it would resolve in module globals.

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from app.deps import Allow, SecuredRoute, SessionDep
from app.errors import Unprocessable
from app.imports import exports, parsers, service
from app.imports.errors import ImportFailed, UnsupportedMediaType
from app.imports.kinds import KINDS
from app.principal import Principal
from app.reports import tabular

router = APIRouter(tags=["imports and exports"], route_class=SecuredRoute)

UPLOAD_MEDIA_TYPES = frozenset(
    {*parsers.CSV_MEDIA_TYPES, tabular.XLSX_MEDIA_TYPE, "application/octet-stream", "application/vnd.ms-excel"}
)
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "text/csv": {"schema": {"type": "string"}},
            tabular.XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
TABULAR_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {tabular.CSV_MEDIA_TYPE: {}, tabular.XLSX_MEDIA_TYPE: {}}}
}


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str | None
    media_type: str | None


async def read_upload(request: Request) -> Upload:
    """A multipart form with the file in field `file`, or the file itself as the body."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=10) as form:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise Unprocessable("send the spreadsheet as a file in the form field 'file'", field="file")
            return Upload(await file.read(), file.filename, (file.content_type or "").split(";")[0].strip().lower())
    if media_type not in UPLOAD_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"send text/csv, {tabular.XLSX_MEDIA_TYPE} or multipart/form-data (got {media_type or 'nothing'})"
        )
    return Upload(await request.body(), None, media_type)


UploadDep = Annotated[Upload, Depends(read_upload)]


class ImportOut(BaseModel):
    kind: str
    rows: int
    created: int


def _read(kind: str, upload: Upload) -> parsers.Table:
    try:
        return parsers.read_table(upload.data, filename=upload.filename, media_type=upload.media_type)
    except ImportFailed as exc:
        raise ImportFailed(kind, exc.errors) from exc


def _add_import_route(kind: str) -> None:
    Importer = Annotated[Principal, Allow(*KINDS[kind].roles)]  # noqa: N806  (a type alias, read as one)

    def import_kind(session: SessionDep, principal: Importer, upload: UploadDep) -> ImportOut:
        result = service.run_import(session, actor=principal, kind=kind, table=_read(kind, upload))
        return ImportOut(kind=result.kind, rows=result.rows, created=result.created)

    import_kind.__doc__ = (
        f"Import {kind} from a CSV or XLSX file (header row; columns in docs/imports.md). All-or-nothing: "
        "on any error nothing is written and the 422 lists every bad cell as {row, column, message}."
    )
    router.add_api_route(
        f"/v1/imports/{kind}",
        import_kind,
        methods=["POST"],
        status_code=201,
        response_model=ImportOut,
        name=f"import_{kind}",
        summary=f"Import {kind}",
        openapi_extra=UPLOAD_BODY,
    )


for _kind in KINDS:
    _add_import_route(_kind)


Exporter = Annotated[Principal, Allow("admin", "logistics")]
SpreadsheetFormat = Annotated[Literal["csv", "xlsx"], Query(alias="format")]
DataKind = Literal["organizations", "sites", "items", "inventory", "requests", "pledges", "shipments", "plans"]
ReportName = Literal["gap", "days-of-supply", "request-ageing", "donor-impact"]
GROUPS: dict[str, tuple[str, ...]] = {"gap": ("region", "coalition"), "request-ageing": ("priority", "organization")}


def _download(export: exports.Export, fmt: Literal["csv", "xlsx"]) -> Response:
    body = tabular.render(fmt, export.columns, export.rows, title=export.name)
    headers = {"Content-Disposition": f'attachment; filename="{export.name}.{fmt}"'}
    return Response(content=body, media_type=tabular.media_type(fmt), headers=headers)


@router.get("/v1/exports/{kind}", response_class=Response, responses=TABULAR_RESPONSES)
def export_data(
    kind: DataKind,
    session: SessionDep,
    principal: Exporter,
    fmt: SpreadsheetFormat = "csv",
    run_id: Annotated[int | None, Query(description="plans: only this run's plan")] = None,
) -> Response:
    """Every row of one kind as CSV (default) or XLSX; organisations, sites and items re-import as exported."""
    return _download(exports.export_data(session, principal=principal, kind=kind, run_id=run_id), fmt)


@router.get("/v1/exports/reports/{report}", response_class=Response, responses=TABULAR_RESPONSES)
def export_report(
    request: Request,
    report: ReportName,
    session: SessionDep,
    principal: Exporter,
    fmt: SpreadsheetFormat = "csv",
    group_by: Annotated[
        Literal["region", "coalition", "priority", "organization"] | None,
        Query(description="gap: region | coalition; request-ageing: priority | organization"),
    ] = None,
    threshold_days: Annotated[float | None, Query(gt=0, le=3650)] = None,
    region: Annotated[str | None, Query(max_length=100)] = None,
    item_id: int | None = None,
    organization_id: int | None = None,
) -> Response:
    """A report (the same rows as GET /v1/reports/{report}) as CSV or XLSX."""
    if group_by is not None and group_by not in GROUPS.get(report, ()):
        allowed = " or ".join(GROUPS.get(report, ())) or "nothing (this report has no grouping)"
        raise Unprocessable(f"the {report} report groups by {allowed}", field="group_by")
    threshold = threshold_days if threshold_days is not None else request.app.state.settings.days_of_supply_threshold
    export = exports.export_report(
        session,
        principal=principal,
        report=report,
        threshold_days=threshold,
        group_by=group_by,
        region=region,
        item_id=item_id,
        organization_id=organization_id,
    )
    return _download(export, fmt)
