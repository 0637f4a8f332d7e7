from collections.abc import Sequence

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from app.models import File, Job, JobStatus
from app.pagination import page


def get_file(session: Session, team_id: str, file_id: str) -> File | None:
    file = session.get(File, file_id)
    return file if file is not None and file.team_id == team_id else None


def list_files(
    session: Session,
    team_id: str,
    *,
    limit: int,
    after: str | None,
    purpose: str | None = None,
    sha256: str | None = None,
) -> tuple[Sequence[File], bool]:
    stmt = select(File).where(File.team_id == team_id)
    if purpose is not None:
        stmt = stmt.where(File.purpose == purpose)
    if sha256 is not None:
        stmt = stmt.where(File.sha256 == sha256)
    return page(session, stmt, File.id, limit=limit, after=after)


def in_use(session: Session, file_id: str) -> bool:
    """Whether a queued or running job still needs the file."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    Job.status.in_([JobStatus.queued, JobStatus.running]),
                    or_(
                        Job.teacher_file_id == file_id,
                        Job.train_file_id == file_id,
                        Job.validation_file_id == file_id,
                        Job.student_file_id == file_id,
                    ),
                )
            )
        )
    )
