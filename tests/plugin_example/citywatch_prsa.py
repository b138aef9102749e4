"""Beijing PRSA hourly air quality (UCI dataset 501) as citywatch events."""

import csv
from datetime import datetime
from zoneinfo import ZoneInfo

from citywatch.connectors.base import CountingCheckpoint, Source
from citywatch.connectors.config import resolve

HOUR_FIELDS = ("year", "month", "day", "hour")


class PrsaSource(CountingCheckpoint, Source):
    domain = "environment"
    summary = "Beijing PRSA hourly air-quality CSV (year, month, day, hour columns)"

    def __init__(self, path, name="prsa"):
        super().__init__(name)
        self.path = path

    @classmethod
    def from_config(cls, config, base_dir):
        return cls(resolve(base_dir, config["path"]), config.get("name", "prsa"))

    def run(self):
        yield from self.counted(self.rows())

    def rows(self):
        with self.path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                if not self.running:
                    return
                where, field = f"{self.path.name}:{reader.line_num}", "/".join(HOUR_FIELDS)
                try:
                    when = datetime(*(int(row[k]) for k in HOUR_FIELDS),
                                    tzinfo=ZoneInfo("Asia/Shanghai"))
                    field = "PM2.5"
                    pm25 = float(row[field])  # the file writes missing readings as NA
                except ValueError as exc:
                    yield self.reject(str(exc), field=field, locator=where, raw=str(row))
                    continue
                yield self.envelope(record_id=f"{row['station']}/{row['No']}",
                                    kind="air_quality.observed", time=when,
                                    entity_id=row["station"], attributes={"pm25": pm25})
