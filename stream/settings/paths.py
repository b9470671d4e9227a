"""Where the project lies: the defaults of the folders the settings name are under it."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
