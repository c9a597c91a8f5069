"""Who an invoice is from and to: the issuer (settings) and each tenant's billing profile.

A profile is history like a plan: a version per date it takes effect, never changed. The
invoice copies the version in force on its issue date (today, for a draft) into its
document, so a sent invoice keeps the address and tax terms it was issued with.
"""

from __future__ import annotations

import hashlib
import tomllib
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Self

import orjson
import PIL.Image
import psycopg
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ledger.events import TENANT_PATTERN
from reports.billing.months import check_month
from reports.billing.versions import (
    store_version,
    version_in_force,
    versions_in_force,
    versions_of,
)

# One line of printable text: stored as JSONB (which refuses NUL) and printed on a PDF.
Text = Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
Email = Annotated[str, Field(max_length=254, pattern=r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+$")]


class ProfileError(ValueError):
    """A billing profile that cannot be stored; says where and why."""


class Party(BaseModel):
    """A legal party as printed on the document."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    legal_name: Annotated[Text, Field(min_length=1)]
    address: Annotated[tuple[Text, ...], Field(max_length=8)] = ()
    country: Country | None = None
    tax_id: Text | None = None
    email: Email | None = None

    def party(self) -> Party:
        """Only the party's own fields, of a subclass that adds more (issuer, profile)."""
        return Party.model_validate(self.model_dump(include=set(Party.model_fields)))


class Issuer(Party):
    """Us, from ``RENDERLEDGER_BILLING__ISSUER__*``; ``logo`` is a PNG or JPEG file."""

    logo: Path | None = None
    payment_instructions: Annotated[tuple[Text, ...], Field(max_length=8)] = ()

    @field_validator("logo")
    @classmethod
    def _readable_image(cls, value: Path | None) -> Path | None:
        """Checked when the settings load: a wrong path must stop the start, not turn
        every invoice PDF into a 500."""
        if value is None:
            return None
        try:
            with PIL.Image.open(value) as image:
                image.verify()
                kind = image.format
        except OSError as exc:
            raise ValueError(f"{value}: cannot read it as an image ({exc})") from None
        if kind not in ("PNG", "JPEG"):
            raise ValueError(f"{value}: a PNG or JPEG image, not {kind}")
        return value


class TaxRate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    label: Annotated[Text, Field(min_length=1, examples=["VAT"])]
    percent: Annotated[Decimal, Field(ge=0, le=100, allow_inf_nan=False, decimal_places=4)]


class ProfileTerms(Party):
    """A profile's content: the customer party and its terms; the tenant and the date it
    takes effect come from the path."""

    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = Field(
        default=None, description="The currency the customer is invoiced in; the plan's must match"
    )
    payment_terms_days: Annotated[int, Field(ge=0, le=365)] = 30
    tax_rates: Annotated[tuple[TaxRate, ...], Field(max_length=4)] = ()
    reverse_charge: bool = Field(
        default=False,
        description="The customer accounts for the tax (EU B2B across borders): no tax is "
        "charged and the invoice says so; needs the customer's tax_id",
    )

    @model_validator(mode="after")
    def _reverse_charge_needs_tax_id(self) -> Self:
        if self.reverse_charge and not self.tax_id:
            raise ValueError("reverse_charge: the customer's tax_id is required")
        if self.reverse_charge and self.tax_rates:
            raise ValueError("reverse_charge: no tax_rates are charged under reverse charge")
        labels = [r.label for r in self.tax_rates]
        if len(set(labels)) != len(labels):
            raise ValueError("tax_rates: each label once")
        return self


class BillingProfile(ProfileTerms):
    tenant: Annotated[str, Field(pattern=TENANT_PATTERN)]
    effective_from: date

    def digest(self) -> str:
        doc = self.model_dump(mode="json")
        return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def parse_profile(data: dict[str, Any], where: str = "profile") -> BillingProfile:
    try:
        profile = BillingProfile.model_validate(data)
        check_month(profile.effective_from)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ProfileError(f"{where}{'.' + loc if loc else ''}: {first['msg']}") from None
    except ValueError as exc:
        raise ProfileError(f"{where}.effective_from: {exc}") from None
    return profile


def read_profiles(path: Path) -> list[BillingProfile]:
    """``[[profile]]`` tables from a TOML file; every entry is checked before any is stored."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{path}: {exc}") from exc
    unknown = set(doc) - {"profile"}
    if unknown:
        raise ProfileError(
            f"{path}: unknown table(s) {', '.join(sorted(unknown))}; use [[profile]]"
        )
    return [parse_profile(p, f"{path}: profile[{i}]") for i, p in enumerate(doc.get("profile", []))]


def store_profile(raw: psycopg.Connection[Any], profile: BillingProfile) -> bool:
    """Record a version; the same content again is a no-op, other content a conflict."""
    body = orjson.dumps(profile.model_dump(mode="json")).decode()
    stored = store_version(
        raw, "billing_profiles", profile.tenant, profile.effective_from, body, profile.digest()
    )
    if stored is None:
        raise ProfileError(
            f"{profile.tenant}: a different billing profile already takes effect on "
            f"{profile.effective_from}; profiles are history — add one for a later date"
        )
    return stored


def profile_for(raw: psycopg.Connection[Any], tenant: str, on: date) -> BillingProfile | None:
    found = version_in_force(raw, "billing_profiles", tenant, on)
    return None if found is None else BillingProfile.model_validate(found)


def profiles_for(
    raw: psycopg.Connection[Any], tenants: list[str], on: date
) -> dict[str, BillingProfile]:
    """Each tenant's profile in force on ``on``, in one read (a batch of drafts)."""
    found = versions_in_force(raw, "billing_profiles", tenants, on)
    return {t: BillingProfile.model_validate(p) for t, p in found.items()}


def profiles_of(raw: psycopg.Connection[Any], tenant: str) -> list[BillingProfile]:
    return [BillingProfile.model_validate(p) for p in versions_of(raw, "billing_profiles", tenant)]


class NoIssuer(ProfileError):
    """Finalizing needs the issuer's legal name: an invoice without it cannot be sent."""


def require_issuer(issuer: Issuer | None) -> Issuer:
    if issuer is None:
        raise NoIssuer(
            "no issuer: a final invoice must say who it is from; set "
            "RENDERLEDGER_BILLING__ISSUER__LEGAL_NAME (and __ADDRESS, __COUNTRY, __TAX_ID, "
            "__PAYMENT_INSTRUCTIONS) and restart"
        )
    return issuer
