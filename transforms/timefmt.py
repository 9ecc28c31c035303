"""Event-time formatting shared by records, the console and the generators (no Beam import).

Any epoch second prints, including the ends of windows that start in 9999 and close in year
10000, where ``datetime`` stops: dates are worked out from the day count (the proleptic
Gregorian calendar, as ``datetime`` counts)."""

_DAY = 86400


def _civil(epoch_seconds: int) -> tuple[int, int, int, int, int, int]:
    """``(year, month, day, hour, minute, second)`` of any epoch second in UTC."""
    days, rest = divmod(int(epoch_seconds), _DAY)
    # Howard Hinnant's days-to-civil: eras of 400 years (146097 days) from 0000-03-01.
    days += 719468
    era, day_of_era = divmod(days, 146097)
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    year = year_of_era + era * 400 + (month <= 2)
    return year, month, day, rest // 3600, rest // 60 % 60, rest % 60


def iso_utc(epoch_seconds: int) -> str:
    """``2019-02-07T21:11:00Z``: ISO-8601 UTC, to the second."""
    year, month, day, hour, minute, second = _civil(epoch_seconds)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def utc_text(epoch_seconds: int, with_date: bool = True) -> str:
    """``2019-02-07 21:11:00`` (UTC), or only ``21:11:00`` without ``with_date``."""
    year, month, day, hour, minute, second = _civil(epoch_seconds)
    clock = f"{hour:02d}:{minute:02d}:{second:02d}"
    return f"{year:04d}-{month:02d}-{day:02d} {clock}" if with_date else clock
