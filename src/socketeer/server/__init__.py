"""Concurrent servers (SPEC §4): ``Server`` with the fork, thread and async models."""

from __future__ import annotations

from .core import Server as Server

__all__ = ["Server"]
