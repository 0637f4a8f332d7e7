from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse

from app import storage
from app.deps import CallerDep, SessionDep
from app.downloads import object_response
from app.errors import error_responses
from app.files import repository, service
from app.files.schemas import FileOut, Purpose
from app.models import File
from app.pagination import After, Limit, ListPage, to_page

router = APIRouter(prefix="/files", tags=["files"])

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["teacher", "dataset"]},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=FileOut,
    responses=error_responses(413, 422),
    openapi_extra=_UPLOAD_BODY,
)
async def upload_file(
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    content_type: Annotated[str, Header(include_in_schema=False)] = "",
) -> File:
    return await service.upload(
        session,
        caller.team_id,
        content_type,
        request.headers.get("content-length"),
        request.stream(),
    )


@router.get("", response_model=ListPage[FileOut])
def list_files(
    session: SessionDep,
    caller: CallerDep,
    limit: Limit = 20,
    after: After = None,
    purpose: Annotated[Purpose | None, Query()] = None,
    sha256: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
) -> ListPage[FileOut]:
    """The team's files; ``sha256`` finds those with exactly these bytes (so a client can reuse
    an upload instead of sending the same file again)."""
    rows, has_more = repository.list_files(
        session, caller.team_id, limit=limit, after=after, purpose=purpose, sha256=sha256
    )
    return to_page(rows, has_more, FileOut.model_validate)


@router.get("/{file_id}", response_model=FileOut, responses=error_responses(404))
def get_file(file_id: str, session: SessionDep, caller: CallerDep) -> File:
    return service.get(session, caller.team_id, file_id)


@router.get(
    "/{file_id}/content",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "Partial content (Range)."},
        **error_responses(404, 416),
    },
)
def file_content(
    file_id: str, request: Request, session: SessionDep, caller: CallerDep
) -> Response:
    file = service.get(session, caller.team_id, file_id)
    return object_response(
        storage.file_key(file.id),
        filename=file.filename,
        sha256=file.sha256,
        size=file.bytes,
        request_headers=request.headers,
    )


@router.delete("/{file_id}", status_code=204, responses=error_responses(404, 409))
def delete_file(file_id: str, session: SessionDep, caller: CallerDep) -> Response:
    service.delete(session, caller.team_id, file_id)
    return Response(status_code=204)
