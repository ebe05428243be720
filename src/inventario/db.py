"""The schema (SQLAlchemy Core, the same on PostgreSQL and SQLite), created on start."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["SCHEMA_VERSION", "create_schema", "invoices", "metadata", "movements", "products"]

SCHEMA_VERSION = 2  # 2: invoices got state/bucket/reason/applied_at

metadata = MetaData()

products = Table(
    "products",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sku", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("category", String(100), nullable=False, server_default=""),
    Column("price", Numeric(12, 2), nullable=False),
    Column("cost", Numeric(12, 2), nullable=False),
    Column("stock", Integer, nullable=False, server_default="0"),
    Column("min_stock", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("price_updated_at", Float, nullable=False),
    CheckConstraint("stock >= 0", name="stock_never_negative"),
    CheckConstraint("price >= 0 AND cost >= 0", name="money_not_negative"),
    CheckConstraint("min_stock >= 0", name="min_stock_not_negative"),
)
Index("products_category", products.c.category)

movements = Table(
    "movements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sku", String(64), ForeignKey("products.sku"), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("delta", Integer, nullable=False),
    Column("reason", String(200), nullable=False, server_default=""),
    Column("stock_after", Integer, nullable=False),
    Column("idempotency_key", String(200), unique=True),
    Column("source", String(10), nullable=False, server_default="direct"),
    Column("invoice_id", String(32)),
    Column("created_at", Float, nullable=False),
    CheckConstraint("kind IN ('in', 'out', 'adjust')", name="movement_kind"),
)
Index("movements_sku", movements.c.sku, movements.c.id)

#: A supplier invoice: the uploaded file (in S3, or in the local spool while S3 is away)
#: and the lines read from it. ``state``: stored -> extracting -> extracted | needs_review
#: -> applied (see inventario.routes.invoices). ``lines`` is a JSON list of
#: {sku, description, quantity, unit_cost}.
invoices = Table(
    "invoices",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("supplier", String(200), nullable=False, server_default=""),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("storage", String(10), nullable=False),
    Column("bucket", String(100), nullable=False),
    Column("object_key", String(300), nullable=False),
    Column("state", String(20), nullable=False),
    Column("lines", Text),
    Column("extracted_by", String(20)),
    Column("reason", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("applied_at", Float),
    CheckConstraint(
        "state IN ('stored', 'extracting', 'extracted', 'needs_review', 'applied')",
        name="invoice_state",
    ),
    CheckConstraint("storage IN ('s3', 'spool')", name="invoice_storage"),
)
Index("invoices_state", invoices.c.state, invoices.c.created_at)

schema_info = Table(
    "inventario_schema",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)


def _replace_unused_v1_invoices(conn: Connection) -> None:
    """Schema 1 had an invoices table no code wrote to; drop it (only if empty) for v2's."""
    inspector = inspect(conn)
    if not inspector.has_table("invoices"):
        return
    columns = {c["name"] for c in inspector.get_columns("invoices")}
    if "state" in columns:
        return
    if conn.execute(text("SELECT COUNT(*) FROM invoices")).scalar():
        raise RuntimeError(
            "the invoices table has the schema 1 layout and holds rows: migrate it by hand"
        )
    conn.execute(text("DROP TABLE invoices"))


async def create_schema(engine: AsyncEngine) -> None:
    """Create the tables that do not exist yet and record the schema version (idempotent)."""
    import time

    async with engine.begin() as conn:
        await conn.run_sync(_replace_unused_v1_invoices)
        await conn.run_sync(metadata.create_all)
        row = await conn.execute(text("SELECT MAX(version) FROM inventario_schema"))
        current = row.scalar()
        if current is None or current < SCHEMA_VERSION:
            await conn.execute(
                schema_info.insert().values(version=SCHEMA_VERSION, applied_at=time.time())
            )
