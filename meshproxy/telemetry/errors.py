"""The telemetry failure domain: configuration the sinks cannot use.

Runtime send failures never raise: they are counted (`meshproxy.telemetry.*` server stats) and logged.
"""

from __future__ import annotations


class TelemetryError(Exception):
    """Base of every telemetry configuration error."""


class AccessLogFormatError(TelemetryError):
    """An access-log format string or JSON format that Envoy would reject (spec §5.5)."""


class SamplingManifestError(TelemetryError):
    """An X-Ray localized sampling-rules manifest that is not a valid version-2 manifest (spec §5.4)."""


class StatsFilterError(TelemetryError):
    """A `/stats?filter=` value that is not a valid regular expression."""
