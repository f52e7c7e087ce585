"""All mapped classes, imported here so that metadata is complete for Alembic."""

from app.models.annotation import (
    Annotation,
    AnnotationEvent,
    EventKind,
    ImageView,
    ImageVisit,
    ObjectColumns,
    Origin,
)
from app.models.base import Base
from app.models.job import Job, JobStatus
from app.models.study import (
    Assignment,
    AssignmentStatus,
    GroundTruthObject,
    Image,
    ImageCompletion,
    Label,
    Mode,
    Study,
    Task,
    TaskKind,
)
from app.models.suggestion import (
    DetectorModel,
    InjectedError,
    Suggestion,
    SuggestionSet,
)
from app.models.training import TrainingRun
from app.models.user import ApiToken, Role, User, WebSession

__all__ = [
    "Annotation",
    "AnnotationEvent",
    "ApiToken",
    "Assignment",
    "AssignmentStatus",
    "Base",
    "DetectorModel",
    "EventKind",
    "GroundTruthObject",
    "Image",
    "ImageCompletion",
    "ImageView",
    "ImageVisit",
    "InjectedError",
    "Job",
    "JobStatus",
    "Label",
    "Mode",
    "ObjectColumns",
    "Origin",
    "Role",
    "Study",
    "Suggestion",
    "SuggestionSet",
    "Task",
    "TaskKind",
    "TrainingRun",
    "User",
    "WebSession",
]
