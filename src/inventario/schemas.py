"""Request and response bodies (pydantic): bad input gets a 422 naming the field."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Money = Decimal

#: Limits (docs/inventario.md, "Limits"): every accepted number fits where it is stored.
#: Stock and quantities: at most a billion units (the columns are 32-bit on every backend).
MAX_STOCK = 1_000_000_000
MAX_QUANTITY = MAX_STOCK
#: Prices and costs: NUMERIC(12, 2).
MAX_PRICE = Decimal("9999999999.99")
#: How far a list can be paged.
MAX_OFFSET = 1_000_000_000


def check_text(value: str) -> str:
    """``value`` if it can be stored alike on every backend: no NUL, no lone surrogate.

    PostgreSQL refuses both (SQLite would store them): refused with a 422
    everywhere, before any database sees them.
    """
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\x00) characters")
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise ValueError("must not contain lone surrogates (text must be valid Unicode)")
    return value


#: A text field or query parameter under the text rules of :func:`check_text`.
Text = Annotated[str, AfterValidator(check_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return check_text(value) if isinstance(value, str) else value


class ProductIn(_Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sku": "W-1",
                    "name": "Widget",
                    "category": "tools",
                    "price": "9.99",
                    "cost": "5.00",
                    "stock": 10,
                    "min_stock": 3,
                }
            ]
        }
    )

    sku: str = Field(pattern=SKU_PATTERN, description="letters, digits, . _ - (max 64)")
    name: str = Field(min_length=1, max_length=200)
    category: str = Field("", max_length=100)
    price: Money = Field(ge=0, max_digits=12, decimal_places=2)
    cost: Money = Field(ge=0, max_digits=12, decimal_places=2)
    stock: int = Field(0, ge=0, le=MAX_STOCK)
    min_stock: int = Field(0, ge=0, le=MAX_STOCK)


class ProductPatch(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"price": "10.49"}]})

    name: str | None = Field(None, min_length=1, max_length=200)
    category: str | None = Field(None, max_length=100)
    price: Money | None = Field(None, ge=0, max_digits=12, decimal_places=2)
    cost: Money | None = Field(None, ge=0, max_digits=12, decimal_places=2)
    min_stock: int | None = Field(None, ge=0, le=MAX_STOCK)


class Product(BaseModel):
    sku: str
    name: str
    category: str
    price: Money
    cost: Money
    stock: int
    min_stock: int
    created_at: float
    updated_at: float
    low_stock: bool


class ProductPage(BaseModel):
    items: list[Product]
    total: int
    limit: int
    offset: int


class MovementIn(_Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"kind": "in", "quantity": 5, "reason": "delivery"}]}
    )

    kind: Literal["in", "out", "adjust"] = Field(
        description="in: receive, out: ship, adjust: set the counted stock"
    )
    quantity: int = Field(
        ge=0, le=MAX_QUANTITY, description="units moved (in/out: >= 1); adjust: the new stock"
    )
    reason: str = Field("", max_length=200)

    @model_validator(mode="after")
    def _in_out_move_something(self) -> MovementIn:
        if self.kind in ("in", "out") and self.quantity < 1:
            raise ValueError("quantity must be >= 1 for in/out movements")
        return self


class Movement(BaseModel):
    id: int
    sku: str
    kind: str
    quantity: int
    delta: int
    reason: str
    stock_after: int
    source: str
    created_at: float


class Queued(BaseModel):
    """A write accepted into the outbox while the database is unavailable (202)."""

    status: Literal["queued"] = "queued"
    idempotency_key: str
    operation: str
    status_url: str
    detail: str


class WriteStatus(BaseModel):
    idempotency_key: str
    status: Literal["pending", "applied", "dead", "discarded", "unknown"]
    operation: str | None = None
    attempts: int | None = None
    last_error: str | None = Field(
        None, description="why it waits or failed, in words for any client"
    )
    reason: str | None = Field(None, description="the error as recorded: only with the admin token")


InvoiceState = Literal["stored", "extracting", "extracted", "needs_review", "applied"]


class InvoiceLine(_Strict):
    """One line of a supplier invoice: what was received and at what unit cost."""

    sku: str | None = Field(
        None, pattern=SKU_PATTERN, description="the product; None when the AI found none"
    )
    description: str = Field("", max_length=500)
    quantity: int = Field(ge=1, le=1_000_000, description="units received (> 0)")
    unit_cost: Money = Field(ge=0, max_digits=12, decimal_places=2)


class ManualInvoiceLine(InvoiceLine):
    """A line entered by hand: the sku is required (and must exist)."""

    sku: str = Field(pattern=SKU_PATTERN, description="an existing product's sku")


class InvoiceLines(_Strict):
    lines: list[ManualInvoiceLine] = Field(min_length=1, max_length=500)


class Invoice(BaseModel):
    id: str
    supplier: str
    filename: str
    content_type: str
    size: int
    sha256: str
    storage: Literal["s3", "spool"] = Field(
        description="where the file is now: in S3, or in the local spool until S3 takes it"
    )
    state: InvoiceState
    lines: list[InvoiceLine] | None
    extracted_by: Literal["ai", "manual"] | None
    reason: str | None = Field(description="why the invoice needs review (or the last failure)")
    created_at: float
    updated_at: float
    applied_at: float | None
    file_url: str


class InvoicePage(BaseModel):
    items: list[Invoice]
    total: int
    limit: int
    offset: int


class AppliedInvoice(BaseModel):
    invoice: Invoice
    movements: list[Movement]


class PriceSuggestion(BaseModel):
    sku: str
    current_price: Money
    suggested_price: Money
    source: Literal["ai", "rule"]
    rationale: str
