"""``Annotated`` dependencies the routers share: the ledger and the settings of this app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ledger.settings import Settings
from ledger.store import Ledger


def get_ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
