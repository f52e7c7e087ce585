"""All mapped classes, imported here so that metadata is complete for Alembic."""

from app.models.annotation import (
    Annotation,
    AnnotationEvent,
    EventKind,
    IdempotentRequest,
    ImageView,
    ImageVisit,
    ObjectColumns,
    ObjectRevision,
    Origin,
)
from app.models.base import Base
from app.models.job import Job, JobStatus
from app.models.slide import Slide, SlideRegion
from app.models.study import (
    Assignment,
    AssignmentStatus,
    GroundTruthObject,
    Image,
    ImageCompletion,
    ImagePurpose,
    Label,
    Mode,
    ReferenceColumns,
    Study,
    Task,
    TaskKind,
    purpose_of_mode,
)
from app.models.suggestion import (
    DetectorModel,
    InjectedError,
    Suggestion,
    SuggestionSet,
)
from app.models.training import TrainingRun
from app.models.user import ApiToken, LoginFailures, Role, User, WebSession
from app.models.worker import WorkerHeartbeat

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
    "IdempotentRequest",
    "Image",
    "ImageCompletion",
    "ImagePurpose",
    "ImageView",
    "ImageVisit",
    "InjectedError",
    "Job",
    "JobStatus",
    "Label",
    "LoginFailures",
    "Mode",
    "ObjectColumns",
    "ObjectRevision",
    "Origin",
    "ReferenceColumns",
    "Role",
    "Slide",
    "SlideRegion",
    "Study",
    "Suggestion",
    "SuggestionSet",
    "Task",
    "TaskKind",
    "TrainingRun",
    "User",
    "WebSession",
    "WorkerHeartbeat",
    "purpose_of_mode",
]
