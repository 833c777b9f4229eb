"""The column types and keys of common Brightspace Data Sets, as D2L documents them, in PostgreSQL terms.

Source: D2L's Brightspace Data Sets schema pages (community.d2l.com/brightspace/kb/articles/
4518-about-brightspace-data-sets and the per-tool pages it links: Users 4740, Organizational Units
4529, Content 4713, Sessions and System Access 4537, ...), fields and types as published in
September 2024 (:data:`CATALOGUE_VERSION`), cross-checked against mjfk23/brightspace-bds-schema
(``migrations/202409.mysql.sql``, generated from those pages) and the pcstrategyandopsco/brightspaceR
key columns. Documented SQL Server types map as: int -> integer, bigint -> bigint, smallint ->
smallint, bit -> boolean (extracts say ``True``/``False``), datetime2 -> timestamptz (extracts are
UTC, ISO 8601), decimal -> numeric (no scale: nothing is rounded), float -> double precision,
uniqueidentifier -> uuid, nvarchar -> text. ``DayAccessed`` of Course Access is documented as local
time, so it is ``timestamp`` (no zone). Columns not listed here, and data sets not listed, are text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CATALOGUE_VERSION = "D2L Brightspace Data Sets schema pages, September 2024"
#: In ``text_columns``, loads every column of a data set as text.
ALL_COLUMNS = "*"

INT, BIGINT, SMALLINT, BOOL, TS, NUM, FLOAT = (
    "integer",
    "bigint",
    "smallint",
    "boolean",
    "timestamptz",
    "numeric",
    "double precision",
)
TEXT = "text"
LOCAL_TS = "timestamp"  # documented as local time: no zone to attach


@dataclass(frozen=True)
class DataSetSchema:
    """One documented data set: its key and its non-text columns (every other column is text)."""

    name: str
    keys: tuple[str, ...]
    columns: Mapping[str, str]
    documented: str = CATALOGUE_VERSION


def _schema(name: str, keys: str, **columns: str) -> DataSetSchema:
    return DataSetSchema(name, tuple(keys.split()), columns)


_SCHEMAS = [
    _schema(
        "Users", "UserId", UserId=INT, IsActive=BOOL, SignupDate=TS, FirstLoginDate=TS, Version=BIGINT,
        OrgRoleId=INT, LastAccessed=TS,
    ),
    _schema(
        "Organizational Units", "OrgUnitId", OrgUnitId=INT, StartDate=TS, EndDate=TS, IsActive=BOOL,
        CreatedDate=TS, IsDeleted=BOOL, DeletedDate=TS, RecycledDate=TS, Version=BIGINT, OrgUnitTypeId=INT,
    ),
    _schema(
        "User Enrollments", "OrgUnitId UserId", OrgUnitId=INT, UserId=INT, EnrollmentDate=TS, RoleId=INT,
    ),
    _schema(
        "Grade Results", "OrgUnitId GradeObjectId UserId", GradeObjectId=INT, OrgUnitId=INT, UserId=INT,
        PointsNumerator=NUM, PointsDenominator=NUM, WeightedNumerator=NUM, WeightedDenominator=NUM,
        IsReleased=BOOL, IsDropped=BOOL, LastModified=TS, LastModifiedBy=INT, IsExempt=BOOL,
        GradeReleasedDate=TS, Version=BIGINT,
    ),
    _schema(
        "Grade Objects", "GradeObjectId", GradeObjectId=INT, OrgUnitId=INT, ParentGradeObjectId=INT,
        StartDate=TS, EndDate=TS, IsAutoPointed=BOOL, IsFormula=BOOL, IsBonus=BOOL, MaxPoints=NUM,
        CanExceedMaxGrade=BOOL, ExcludeFromFinalGradeCalc=BOOL, GradeSchemeId=BIGINT, Weight=NUM,
        NumLowestGradesToDrop=INT, NumHighestGradesToDrop=INT, CreatedDate=TS, AssociatedToolItemId=BIGINT,
        LastModified=TS, GradeObjectTypeId=INT, SortOrder=INT, IsDeleted=BOOL, DeletedDate=TS,
        DeletedByUserId=INT, ResultId=INT,
    ),
    _schema(
        "Content Objects", "ContentObjectId", ContentObjectId=INT, OrgUnitId=INT, ParentContentObjectId=INT,
        StartDate=TS, EndDate=TS, DueDate=TS, ObjectId1=INT, ObjectId2=INT, ObjectId3=INT, LastModified=TS,
        IsDeleted=BOOL, SortOrder=INT, Depth=INT, ToolId=INT, IsHidden=BOOL, ResultId=INT, DeletedDate=TS,
        CreatedBy=INT, LastModifiedBy=INT, DeletedBy=INT,
    ),
    _schema(
        "Content User Progress", "ContentObjectId UserId", ContentObjectId=INT, UserId=INT, CompletedDate=TS,
        LastVisited=TS, IsRead=BOOL, NumRealVisits=INT, NumFakeVisits=INT, TotalTime=BIGINT, IsVisited=BOOL,
        IsCurrentBookmark=BOOL, IsSelfAssessComplete=BOOL, LastModified=TS,
    ),
    _schema(
        "Quiz Attempts", "AttemptId", AttemptId=BIGINT, QuizId=BIGINT, UserId=INT, OrgUnitId=INT,
        AttemptNumber=INT, TimeStarted=TS, TimeCompleted=TS, Score=NUM, IsGraded=BOOL, OldAttemptNumber=INT,
        IsDeleted=BOOL, PossibleScore=NUM, IsRetakeIncorrectOnly=BOOL, DueDate=TS, TimeLimit=INT,
        TimeLimitEnforced=BOOL, IsSynchronous=BOOL, DeductionPercentage=INT,
    ),
    _schema(
        "Quiz User Answers", "AttemptId ObjectId", AttemptId=BIGINT, QuestionId=BIGINT,
        QuestionVersionId=BIGINT, TimeCompleted=TS, QuestionNumber=INT, SortOrder=INT, Score=NUM, Page=INT,
        SectionId=BIGINT, ObjectId=BIGINT, OutOf=NUM, TimeStarted=TS, IsBonus=BOOL, IsDeleted=BOOL,
        LastModified=TS, LastModifiedBy=INT, QuizTimeCompleted=TS,
    ),
    _schema("Course Access", "OrgUnitId UserId DayAccessed", OrgUnitId=INT, UserId=INT, DayAccessed=LOCAL_TS),
    _schema(
        "Role Details", "RoleId", RoleId=INT, IsCascading=BOOL, InClassList=BOOL, ClassListShowGroups=BOOL,
        ClassListShowSections=BOOL, ClassListDisplayRole=BOOL, AccessInactiveCO=BOOL, HasSpecialAccess=BOOL,
        AddToCourseOfferingGroups=BOOL, CanBeAutoEnrolledIntoGroups=BOOL, AddToCourseOfferingSections=BOOL,
        CanBeAutoEnrolledIntoSections=BOOL, AccessPastCourses=BOOL, AccessFutureCourses=BOOL, SortOrder=INT,
        ShowInContent=BOOL, ShowInDiscussionAssess=BOOL, ShowInDiscussionStats=BOOL, ShowInGrades=BOOL,
        ShowInAttendance=BOOL, AllowSelfEnrollInGroups=BOOL, ShowInRegistration=BOOL,
        ShowInUserProgress=BOOL, LastModifiedDate=TS, DeletedBy=INT,
    ),
    _schema(
        "Organizational Unit Ancestors", "OrgUnitId AncestorOrgUnitId", OrgUnitId=INT, AncestorOrgUnitId=INT,
    ),
    _schema(
        "Organizational Unit Descendants", "OrgUnitId DescendantOrgUnitId", OrgUnitId=INT,
        DescendantOrgUnitId=INT,
    ),
    _schema(
        "Organizational Unit Parents", "OrgUnitId ParentOrgUnitId", OrgUnitId=INT, ParentOrgUnitId=INT,
        RowVersion=BIGINT, DateDeleted=TS,
    ),
    _schema(
        "User Logins", "LoginAttemptId", UserId=INT, SessionId=INT, AttemptDate=TS, ImpersonatingUserId=INT,
    ),
    _schema(
        "Session History", "HistoryID", SessionId=BIGINT, OrgId=INT, UserId=INT, DateStarted=TS, DateEnded=TS,
        LastAccessed=TS, TimedOut=BOOL, HistoryID=BIGINT,
    ),
    _schema(
        "System Access Log", "SessionId UserId Timestamp State", UserId=INT, Timestamp=TS, IsOfflineMode=BOOL,
    ),
    _schema(
        "Assignment Submissions", "DropboxId SubmitterId", DropboxId=BIGINT, OrgUnitId=INT,
        SubmitterId=BIGINT, FileSubmissionCount=INT, TotalFileSize=BIGINT, FeedbackUserId=INT,
        FeedbackIsRead=BOOL, Score=NUM, IsGraded=BOOL, LastSubmissionDate=TS, FeedbackLastModified=TS,
        FeedbackReadDate=TS, CompletionDate=TS,
    ),
    _schema(
        "Discussion Posts", "PostId", OrgUnitId=INT, TopicId=BIGINT, UserId=INT, PostId=BIGINT,
        ThreadId=BIGINT, IsReply=BOOL, ParentPostId=BIGINT, NumReplies=INT, DatePosted=TS, IsDeleted=BOOL,
        RatingSum=BIGINT, NumRatings=BIGINT, Score=NUM, LastEditDate=TS, SortOrder=INT, Depth=INT,
        WordCount=INT, AttachmentCount=INT, Version=BIGINT,
    ),
]  # fmt: skip

#: Data set name -> schema. "Org Units" and "Org Unit Ancestors" are the names the emulator and
#: older listings use for the documented "Organizational Units" / "Organizational Unit Ancestors".
CATALOGUE: dict[str, DataSetSchema] = {schema.name: schema for schema in _SCHEMAS}
CATALOGUE["Org Units"] = CATALOGUE["Organizational Units"]
CATALOGUE["Org Unit Ancestors"] = CATALOGUE["Organizational Unit Ancestors"]

#: Key columns of the catalogued data sets. Others must be given per data set.
DEFAULT_KEY_COLUMNS: dict[str, list[str]] = {name: list(schema.keys) for name, schema in CATALOGUE.items()}


def names_of(data_set: str) -> list[str]:
    """``data_set`` and the other names of the same catalogued data set ("Org Units" and "Organizational
    Units"); just ``[data_set]`` for a data set the catalogue does not know."""
    schema = CATALOGUE.get(data_set)
    others = [name for name, known in CATALOGUE.items() if schema is not None and known is schema]
    return list(dict.fromkeys([data_set, *others]))


def key_columns_for(data_set: str, overrides: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The key of a data set: the operator's mapping first, then the catalogue."""
    keys = (overrides or {}).get(data_set) or DEFAULT_KEY_COLUMNS.get(data_set)
    if not keys:
        # Imported here: the catalogue is plain data the emulator reads too, and the emulator must not
        # import Airflow (importing it takes over logging: the standalone emulator's log would go).
        from airflow_provider_canvas.exceptions import LmsConfigurationError

        raise LmsConfigurationError(
            f"no key columns known for data set {data_set!r}: pass key_columns={{{data_set!r}: [...]}} "
            "with the columns that identify a row (see the data set's documentation)"
        )
    return list(keys)


def column_types_for(data_set: str, text_columns: Sequence[str] = ()) -> dict[str, str]:
    """PostgreSQL types of the data set's documented non-text columns, less ``text_columns``.

    ``text_columns`` containing :data:`ALL_COLUMNS` (``"*"``) gives ``{}``: everything as text.
    Unknown data sets give ``{}`` too.
    """
    schema = CATALOGUE.get(data_set)
    if schema is None or ALL_COLUMNS in text_columns:
        return {}
    return {column: kind for column, kind in schema.columns.items() if column not in text_columns}
