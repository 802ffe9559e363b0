"""Fraud and anomaly alerts: explainable rules over a day's ``cdrs``, in DuckDB SQL.

A call date's alerts are a function of that day's ``cdrs`` files, of the trailing days the
baselines need (``warehouse.table_files_for_day``), of the thresholds (``fraud.toml``, see
:mod:`cdr_assets.lib.fraud_config`) and of the alerts already raised on earlier days (the
snooze). They are written to ``<warehouse>/fraud_alerts/<YYYY-MM-DD>.parquet`` under a
temporary name and renamed into place; re-running a day rewrites the same rows.

Rules (details, metrics and baselines in docs/fraud.md):

- ``wangiri``: one caller, many very short or unanswered calls to many distinct numbers
  within a sliding window (``RANGE`` window frames per caller);
- ``irsf``: one caller's calls to high-risk prefixes or premium-rate numbers with minutes
  or spend over a threshold within a sliding window;
- ``spend_velocity``: a caller's international spend in a UTC hour, off-hours spend
  weighted up, far above a quantile of its own active hours over the trailing days;
- ``traffic_anomaly``: calls, minutes or ASR of a carrier or destination in an hour far
  from the median of the same hour over the trailing days (robust z-score);
- ``long_call``, ``self_call``, ``negative_margin``: odd calls, one alert per subject a day.

Sliding-window rules look back into the previous day (two windows' worth), so an episode
that crosses midnight is seen whole; an episode already firing before midnight belongs to
the previous day and is not raised again. Consecutive firing calls less than a window apart
are one episode, hence one alert.

Every alert has a deterministic ``alert_id`` (MD5 of rule, subject type, subject and
window start), so a re-run finds the same ids. The snooze is computed from earlier days'
alert files and the day's own alerts in time order, never from wall-clock state: an alert
is dropped when the same rule and subject raised one whose window ended less than
``snooze_hours`` before this one starts, unless this one's severity is higher.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from cdr_assets.lib.fraud_config import MAX_SAMPLE_CALL_IDS, FraudConfig
from cdr_assets.lib.warehouse import (
    DAY_CACHE_DIRS,
    Warehouse,
    copy_to_parquet_atomic,
    day_file_aggregates,
    read_parquet_sql,
    remove_file,
    write_text_atomic,
)

TABLE = "fraud_alerts"
RULES = (
    "wangiri",
    "irsf",
    "spend_velocity",
    "traffic_anomaly",
    "long_call",
    "self_call",
    "negative_margin",
)
SEVERITY_RANK = {"WARN": 1, "ERROR": 2}

# The table's columns, as ``DESCRIBE fraud_alerts`` shows them.
ALERT_COLUMNS = """call_date DATE, alert_id VARCHAR, rule VARCHAR, severity VARCHAR,
        subject_type VARCHAR, subject VARCHAR, window_start TIMESTAMPTZ,
        window_end TIMESTAMPTZ, metrics VARCHAR, baseline VARCHAR, sample_call_ids VARCHAR[],
        score DOUBLE, summary VARCHAR, config_version VARCHAR"""

_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PARAM_RE = re.compile(r"\$([a-z_]+)")

# -- rule SQL ----------------------------------------------------------------------------
#
# Sources (views made per day): day_calls (the day), recent_calls (the day and the one
# before), span_calls (the trailing baseline days, and the day so that it is never empty),
# plus the table traffic_cells (the hourly traffic cells of the baseline days and the day).
# Parameters are bound.

_WINDOW = """PARTITION BY subject ORDER BY start_time
        RANGE BETWEEN to_minutes($window_minutes) PRECEDING AND CURRENT ROW"""

# From ``firing`` (calls where the rule holds over the window ending at them, with their
# window's metrics ``m`` and a ``peak_key``) and ``pool`` (the calls the rule looks at):
# episodes of firing calls less than a window apart, their peak and their sample calls.
_EPISODES = """,
marked AS (
    SELECT *, CASE WHEN start_time - lag(start_time) OVER (
            PARTITION BY subject ORDER BY start_time, call_id) <= to_minutes($window_minutes)
        THEN 0 ELSE 1 END AS opens
    FROM firing
),
numbered AS (
    SELECT *, sum(opens) OVER (PARTITION BY subject ORDER BY start_time, call_id
        ROWS UNBOUNDED PRECEDING) AS episode
    FROM marked
),
episodes AS (
    SELECT subject, episode, min(start_time) AS first_fire, max(start_time) AS last_fire,
        min(frame_start) AS window_start, max(frame_end) AS window_end,
        arg_max(m, peak_key) AS peak
    FROM numbered
    GROUP BY subject, episode
    HAVING min(start_time) >= $day_start
),
samples AS (
    SELECT e.subject, e.episode,
        list(p.call_id ORDER BY p.start_time, p.call_id) AS ids,
        list_sort(list_distinct(list(p.tag))) AS tags
    FROM episodes AS e
    JOIN pool AS p
        ON p.subject = e.subject AND p.start_time BETWEEN e.window_start AND e.last_fire
    GROUP BY e.subject, e.episode
)
"""

# Suspects first, from narrow columns: only their calls are read in full and windowed.
WANGIRI_SQL = f"""
WITH short_buckets AS (
    SELECT caller_number AS subject,
        floor(epoch_us(start_time) / (60000000.0 * $window_minutes)) AS bucket,
        count(*) AS short_calls, max(start_time) AS last_start
    FROM recent_calls
    WHERE caller_number IS NOT NULL AND start_time >= $tail_from
        AND (disposition <> 'ANSWERED' OR duration_seconds <= $max_short_seconds)
    GROUP BY ALL
),
-- Only a caller with min_short_calls short calls within one window can fire. A window
-- (window_minutes back from a call, both ends in) lies within two consecutive buckets of
-- its length, so a caller whose short calls in every such pair are fewer is left out: the
-- window functions below then run on a few callers' calls, not on every caller's.
suspects AS (
    SELECT a.subject
    FROM short_buckets AS a
    LEFT JOIN short_buckets AS b ON b.subject = a.subject AND b.bucket = a.bucket + 1
    GROUP BY a.subject
    HAVING max(a.short_calls + coalesce(b.short_calls, 0)) >= $min_short_calls
        AND max(a.last_start) >= $day_start
),
calls AS (
    SELECT call_id, caller_number AS subject, called_number, start_time, end_time,
        disposition <> 'ANSWERED' OR duration_seconds <= $max_short_seconds AS short
    FROM recent_calls
    WHERE start_time >= $tail_from AND caller_number IN (SELECT subject FROM suspects)
),
pool AS (SELECT subject, call_id, start_time, NULL::VARCHAR AS tag FROM calls WHERE short),
framed AS (
    SELECT calls.*,
        count(*) OVER w AS calls_in_window,
        count(*) FILTER (WHERE short) OVER w AS short_calls,
        count(DISTINCT called_number) FILTER (WHERE short) OVER w AS distinct_called,
        min(start_time) FILTER (WHERE short) OVER w AS frame_start,
        max(end_time) OVER w AS frame_end
    FROM calls
    WINDOW w AS ({_WINDOW})
),
firing AS (
    SELECT subject, call_id, start_time, frame_start, frame_end,
        [distinct_called, short_calls, -epoch(start_time)] AS peak_key,
        {{calls: calls_in_window, short_calls: short_calls, distinct_called: distinct_called,
          short_share: round(short_calls / calls_in_window, 4), peak_at: start_time}} AS m
    FROM framed
    WHERE short AND start_time >= $reliable_from
        AND short_calls >= $min_short_calls
        AND distinct_called >= $min_distinct_called
        AND short_calls >= $min_short_share * calls_in_window
){_EPISODES}
SELECT 'wangiri' AS rule,
    CASE WHEN peak.distinct_called >= $error_distinct_called THEN 'ERROR' ELSE 'WARN' END
        AS severity,
    'caller' AS subject_type, subject, window_start, window_end,
    to_json({{short_calls: peak.short_calls, calls: peak.calls,
        distinct_called: peak.distinct_called, short_share: peak.short_share,
        window_minutes: $window_minutes, peak_at: peak.peak_at}})::VARCHAR AS metrics,
    to_json({{min_short_calls: $min_short_calls, min_distinct_called: $min_distinct_called,
        min_short_share: $min_short_share, max_short_seconds: $max_short_seconds,
        error_distinct_called: $error_distinct_called}})::VARCHAR AS baseline,
    ids AS sample_call_ids,
    peak.distinct_called / $min_distinct_called AS score,
    format('{{}} rang {{}} distinct numbers with {{}} short or unanswered calls within {{}} min '
        || '({{}}% of its calls)', subject, peak.distinct_called, peak.short_calls,
        $window_minutes, round(100 * peak.short_share)::BIGINT) AS summary
FROM episodes JOIN samples USING (subject, episode)
"""

IRSF_SQL = f"""
WITH calls AS (
    SELECT call_id, caller_number AS subject, called_number, start_time, end_time,
        duration_seconds, cost,
        CASE
            WHEN $use_prefixes AND regexp_matches(called_number, $prefix_pattern)
                THEN regexp_extract(called_number, $prefix_pattern)
            WHEN $premium_rate AND called_number_type = 'premium_rate' THEN 'premium_rate'
        END AS tag
    FROM recent_calls
    WHERE caller_number IS NOT NULL AND start_time >= $tail_from
),
pool AS (SELECT * FROM calls WHERE tag IS NOT NULL),
suspects AS (
    SELECT subject FROM pool GROUP BY subject
    HAVING count(*) >= $min_calls AND max(start_time) >= $day_start
),
framed AS (
    SELECT pool.*,
        count(*) OVER w AS calls_in_window,
        sum(duration_seconds) OVER w AS seconds,
        coalesce(sum(cost) OVER w, 0) AS spend,
        count(DISTINCT called_number) OVER w AS distinct_called,
        min(start_time) OVER w AS frame_start,
        max(end_time) OVER w AS frame_end
    FROM pool SEMI JOIN suspects USING (subject)
    WINDOW w AS ({_WINDOW})
),
firing AS (
    SELECT subject, call_id, start_time, frame_start, frame_end,
        [seconds::DOUBLE, spend::DOUBLE, -epoch(start_time)] AS peak_key,
        {{calls: calls_in_window, seconds: seconds, spend: spend,
          distinct_called: distinct_called, peak_at: start_time}} AS m
    FROM framed
    WHERE start_time >= $reliable_from AND calls_in_window >= $min_calls
        AND (seconds >= $min_minutes * 60 OR spend >= CAST($min_spend AS DECIMAL(38, 6)))
){_EPISODES}
SELECT 'irsf' AS rule,
    CASE WHEN peak.seconds >= $error_minutes * 60
        OR peak.spend >= CAST($error_spend AS DECIMAL(38, 6)) THEN 'ERROR' ELSE 'WARN' END
        AS severity,
    'caller' AS subject_type, subject, window_start, window_end,
    to_json({{calls: peak.calls, minutes: round(peak.seconds / 60, 1),
        spend: peak.spend::VARCHAR, distinct_called: peak.distinct_called, destinations: tags,
        window_minutes: $window_minutes, peak_at: peak.peak_at}})::VARCHAR AS metrics,
    to_json({{min_calls: $min_calls, min_minutes: $min_minutes, min_spend: $min_spend,
        error_minutes: $error_minutes, error_spend: $error_spend}})::VARCHAR AS baseline,
    ids AS sample_call_ids,
    greatest(peak.seconds / greatest($min_minutes * 60, 1),
        peak.spend::DOUBLE / greatest(CAST($min_spend AS DOUBLE), 0.01)) AS score,
    format('{{}} made {{}} calls to {{}}: {{}} min, spend {{}} within {{}} min', subject,
        peak.calls, array_to_string(tags, ', '), round(peak.seconds / 60)::BIGINT,
        peak.spend, $window_minutes) AS summary
FROM episodes JOIN samples USING (subject, episode)
"""

# The day's caller-hours over the spend floor, first: the trailing days are only read (for
# these callers) when there is one, which on most days there is not.
SPEND_CANDIDATES_SQL = """
CREATE OR REPLACE TEMP TABLE spend_candidates AS
WITH day_hours AS (
    SELECT caller_number AS subject, date_trunc('hour', start_time) AS call_hour,
        count(*) AS calls,
        coalesce(sum(cost), 0) AS spend,
        coalesce(sum(cost) FILTER (WHERE off_hours), 0) AS off_hours_spend
    FROM (
        SELECT *, local_start_time IS NOT NULL AND (
                hour(local_start_time) < $business_start_hour
                OR hour(local_start_time) >= $business_end_hour
                OR NOT list_contains($business_days, isodow(local_start_time))
            ) AS off_hours
        FROM day_calls
        WHERE call_type = 'international' AND caller_number IS NOT NULL
    )
    GROUP BY ALL
),
candidates AS (
    SELECT *,
        spend + off_hours_spend * CAST($extra_weight AS DECIMAL(18, 6)) AS weighted_spend
    FROM day_hours
    WHERE calls >= $min_calls
        AND spend + off_hours_spend * CAST($extra_weight AS DECIMAL(18, 6))
            >= CAST($min_spend AS DECIMAL(38, 6))
)
SELECT * FROM candidates
"""

SPEND_VELOCITY_SQL = """
WITH history AS (
    SELECT caller_number AS subject, date_trunc('hour', start_time) AS call_hour,
        coalesce(sum(cost) FILTER (WHERE call_type = 'international'), 0) AS spend
    FROM span_calls
    WHERE call_date >= $baseline_from AND call_date < $day_date
        AND caller_number IN (SELECT subject FROM spend_candidates)
    GROUP BY ALL
),
baseline AS (
    SELECT subject, count(*) AS active_hours, count(DISTINCT call_hour::DATE) AS active_days,
        quantile_disc(spend, $baseline_quantile) AS usual_spend, max(spend) AS peak_spend
    FROM history GROUP BY subject
),
judged AS (
    SELECT c.*, b.active_hours, b.active_days, b.usual_spend, b.peak_spend,
        greatest(CAST($min_spend AS DECIMAL(38, 6)),
            CAST($ratio AS DECIMAL(18, 6)) * b.usual_spend) AS threshold
    FROM spend_candidates AS c JOIN baseline AS b USING (subject)
    WHERE b.active_hours >= $min_baseline_hours
),
samples AS (
    SELECT j.subject, j.call_hour, list(d.call_id ORDER BY d.start_time, d.call_id) AS ids
    FROM judged AS j
    JOIN day_calls AS d
        ON d.caller_number = j.subject AND date_trunc('hour', d.start_time) = j.call_hour
    WHERE d.call_type = 'international'
    GROUP BY ALL
)
SELECT 'spend_velocity' AS rule,
    CASE WHEN weighted_spend >= CAST($error_spend AS DECIMAL(38, 6)) THEN 'ERROR' ELSE 'WARN' END
        AS severity,
    'caller' AS subject_type, subject,
    call_hour AS window_start, call_hour + INTERVAL 1 HOUR AS window_end,
    to_json({international_calls: calls, international_spend: spend::VARCHAR,
        off_hours_spend: off_hours_spend::VARCHAR,
        weighted_spend: round(weighted_spend, 4)::VARCHAR})::VARCHAR AS metrics,
    to_json({usual_hour_spend: usual_spend::VARCHAR, peak_hour_spend: peak_spend::VARCHAR,
        quantile: $baseline_quantile, active_hours: active_hours, active_days: active_days,
        days: $baseline_days, ratio: $ratio, min_spend: $min_spend,
        threshold: round(threshold, 4)::VARCHAR, off_hours_weight: $off_hours_weight,
        error_spend: $error_spend})::VARCHAR AS baseline,
    ids AS sample_call_ids,
    weighted_spend::DOUBLE / greatest(threshold::DOUBLE, 0.01) AS score,
    format('{} spent {} on {} international calls in the hour from {} UTC ({} outside office '
        || 'hours; weighted {}), usual hour {}', subject, spend, calls,
        strftime(call_hour, '%H:%M'), off_hours_spend, round(weighted_spend, 2),
        usual_spend) AS summary
FROM judged JOIN samples USING (subject, call_hour)
WHERE weighted_spend >= threshold
"""

# Calls per day, hour, carrier and destination (called country, else the number's first
# digits) of one cdrs file. Minutes are the seconds carried within the hour the call started
# in, so one long call cannot swamp an hour with minutes it spread over the next ones. Each
# file's cells are kept (``warehouse.day_file_aggregates``) and reused while the file is
# unchanged, so a run aggregates its own new files only, not the whole baseline again; a
# day's cells are the sums of its files' cells.
TRAFFIC_FILE_CELLS_SQL = """
SELECT call_date, hour(start_time) AS hod, carrier_id,
    coalesce(called_country, left(called_number, 4)) AS destination,
    count(*) AS calls,
    count(*) FILTER (WHERE disposition = 'ANSWERED') AS answered,
    coalesce(sum(least(duration_seconds, 3600 - minute(start_time) * 60 - second(start_time)))
        FILTER (WHERE disposition = 'ANSWERED'), 0)::BIGINT AS answered_seconds
FROM file_cdrs
GROUP BY ALL
"""
TRAFFIC_CELLS_VERSION = "2"  # part of the cache key: change it when the query changes
TRAFFIC_CELLS_DIR = DAY_CACHE_DIRS[1]  # under the warehouse's _state folder

# Judges one subject type (__SUBJECT_TYPE__, column __SUBJECT__). ``excluded`` lists the
# (carrier, hour) pairs left out: a destination is judged on the traffic of the carriers
# that were not themselves anomalous in that hour, so one carrier's outage is one alert,
# not one per destination it carries.
_TRAFFIC_TEMPLATE = """
WITH excluded AS (__EXCLUDED__),
kept AS (
    SELECT * FROM traffic_cells AS t
    WHERE NOT EXISTS (
        SELECT 1 FROM excluded AS e WHERE e.carrier_id = t.carrier_id AND e.hod = t.hod)
),
wanted AS (
    SELECT call_date, hod, '__SUBJECT_TYPE__' AS subject_type, __SUBJECT__ AS subject,
        sum(calls) AS calls, sum(answered) AS answered, sum(answered_seconds) AS answered_seconds
    FROM kept
    WHERE list_contains($subjects, '__SUBJECT_TYPE__')
    GROUP BY ALL
),
days AS (SELECT DISTINCT call_date FROM traffic_cells),
subjects AS (SELECT DISTINCT subject_type, subject FROM wanted),
grid AS (
    SELECT d.call_date, h.hod, s.subject_type, s.subject,
        coalesce(c.calls, 0) AS calls,
        coalesce(c.answered, 0) AS answered,
        coalesce(c.answered_seconds, 0) AS answered_seconds
    FROM days AS d
    CROSS JOIN (SELECT range AS hod FROM range(24)) AS h
    CROSS JOIN subjects AS s
    LEFT JOIN wanted AS c USING (call_date, hod, subject_type, subject)
),
base AS (
    SELECT subject_type, subject, hod, count(*) AS days,
        median(calls::DOUBLE) AS calls_median, mad(calls::DOUBLE) AS calls_mad,
        median(answered_seconds / 60.0) AS minutes_median,
        mad(answered_seconds / 60.0) AS minutes_mad,
        median(100.0 * answered / calls) FILTER (WHERE calls > 0) AS asr_median,
        mad(100.0 * answered / calls) FILTER (WHERE calls > 0) AS asr_mad,
        count(*) FILTER (WHERE calls > 0) AS asr_days
    FROM grid
    WHERE call_date < $day_date
    GROUP BY ALL
),
today AS (
    SELECT subject_type, subject, hod, calls, answered_seconds / 60.0 AS minutes,
        CASE WHEN calls > 0 THEN 100.0 * answered / calls END AS asr
    FROM grid
    WHERE call_date = $day_date
),
last_hour AS (SELECT max(hod) AS last_hod FROM traffic_cells WHERE call_date = $day_date),
scored AS (
    SELECT t.*, b.* EXCLUDE (subject_type, subject, hod),
        (t.calls - b.calls_median)
            / greatest(1.4826 * b.calls_mad, sqrt(greatest(b.calls_median, 1.0))) AS z_calls,
        (t.minutes - b.minutes_median)
            / greatest(1.4826 * b.minutes_mad,
                b.minutes_median * sqrt(2.0 / greatest(b.calls_median, 1.0)), 1.0) AS z_minutes,
        (t.asr - b.asr_median)
            / greatest(1.4826 * b.asr_mad,
                100.0 * sqrt(least(greatest(b.asr_median / 100.0, 0.05), 0.95)
                    * (1.0 - least(greatest(b.asr_median / 100.0, 0.05), 0.95))
                    / greatest(t.calls, 1)),
                1.0) AS z_asr,
        t.hod < l.last_hod AS complete
    FROM today AS t
    JOIN base AS b USING (subject_type, subject, hod)
    CROSS JOIN last_hour AS l
    WHERE t.hod <= l.last_hod
),
tested AS (
    SELECT *,
        days >= $min_baseline_days AND greatest(calls, calls_median) >= $min_hour_calls
            AS sampled,
        -- an hour that keeps at most collapse_ratio of its usual traffic is an outage,
        -- however much the traffic varies from day to day
        days >= $min_baseline_days AND calls_median >= $min_hour_calls AND complete
            AS collapse_sampled
    FROM scored
),
judged AS (
    SELECT *,
        list_contains($metrics, 'calls') AND collapse_sampled
            AND calls <= $collapse_ratio * calls_median AS calls_collapsed,
        list_contains($metrics, 'minutes') AND collapse_sampled
            AND minutes <= $collapse_ratio * minutes_median AS minutes_collapsed,
        list_contains($metrics, 'calls') AND sampled
            AND abs(z_calls) >= $z_warn
            AND abs(calls - calls_median) >= $min_relative_change * calls_median
            AND (calls > calls_median OR complete) AS calls_outlier,
        list_contains($metrics, 'minutes') AND sampled
            AND abs(z_minutes) >= $z_warn
            AND abs(minutes - minutes_median) >= $min_relative_change * minutes_median
            AND (minutes > minutes_median OR complete) AS minutes_outlier,
        coalesce(list_contains($metrics, 'asr') AND asr_days >= $min_baseline_days
            AND calls >= $min_hour_calls AND calls_median >= $min_hour_calls
            AND abs(z_asr) >= $z_warn
            AND abs(asr - asr_median) >= $min_asr_change, false) AS asr_fired
    FROM tested
),
hits AS (
    SELECT *,
        calls_outlier OR calls_collapsed AS calls_fired,
        minutes_outlier OR minutes_collapsed AS minutes_fired,
        greatest(CASE WHEN calls_outlier OR calls_collapsed THEN abs(z_calls) END,
            CASE WHEN minutes_outlier OR minutes_collapsed THEN abs(z_minutes) END,
            CASE WHEN asr_fired THEN abs(z_asr) END) AS top_z,
        $day_start + to_hours(hod) AS window_start
    FROM judged
    WHERE calls_outlier OR calls_collapsed OR minutes_outlier OR minutes_collapsed
        OR asr_fired
),
samples AS (
    SELECT h.subject_type, h.subject, h.hod,
        list(c.call_id ORDER BY c.answered, c.start_time, c.call_id) AS ids
    FROM hits AS h
    JOIN (
        SELECT call_id, start_time, hour(start_time) AS hod, carrier_id,
            coalesce(called_country, left(called_number, 4)) AS destination,
            disposition = 'ANSWERED' AS answered
        FROM day_calls
    ) AS c ON c.hod = h.hod AND c.__SUBJECT__ = h.subject
    WHERE NOT EXISTS (
        SELECT 1 FROM excluded AS e WHERE e.carrier_id = c.carrier_id AND e.hod = c.hod)
    GROUP BY ALL
)
SELECT 'traffic_anomaly' AS rule,
    CASE WHEN top_z >= $z_error OR calls_collapsed OR minutes_collapsed THEN 'ERROR'
        ELSE 'WARN' END AS severity,
    h.subject_type, h.subject, window_start, window_start + INTERVAL 1 HOUR AS window_end,
    to_json({calls: calls, minutes: round(minutes, 1), asr: round(asr, 2),
        z_calls: round(z_calls, 2), z_minutes: round(z_minutes, 2), z_asr: round(z_asr, 2),
        fired: list_concat(
            CASE WHEN calls_fired THEN ['calls'] ELSE []::VARCHAR[] END,
            CASE WHEN minutes_fired THEN ['minutes'] ELSE []::VARCHAR[] END,
            CASE WHEN asr_fired THEN ['asr'] ELSE []::VARCHAR[] END),
        collapsed: calls_collapsed OR minutes_collapsed})::VARCHAR AS metrics,
    to_json({days: days, hour_utc: hod, calls_median: calls_median, calls_mad: calls_mad,
        minutes_median: round(minutes_median, 1), minutes_mad: round(minutes_mad, 1),
        asr_median: round(asr_median, 2), asr_mad: round(asr_mad, 2), asr_days: asr_days,
        z_warn: $z_warn, z_error: $z_error, collapse_ratio: $collapse_ratio})::VARCHAR
        AS baseline,
    coalesce(s.ids, []) AS sample_call_ids,
    top_z / $z_warn AS score,
    format('{} {} {}:00-{}:00 UTC: {}', h.subject_type, h.subject, lpad(hod::VARCHAR, 2, '0'),
        lpad((hod + 1)::VARCHAR, 2, '0'), concat_ws('; ',
            CASE WHEN calls_fired THEN format('calls {} (usual {})', calls,
                round(calls_median)::BIGINT) END,
            CASE WHEN minutes_fired THEN format('minutes {} (usual {})',
                round(minutes)::BIGINT, round(minutes_median)::BIGINT) END,
            CASE WHEN asr_fired THEN format('ASR {}% (usual {}%)', round(asr, 1),
                round(asr_median, 1)) END)) AS summary
FROM hits AS h
LEFT JOIN samples AS s USING (subject_type, subject, hod)
"""

TRAFFIC_CARRIER_SQL = (
    _TRAFFIC_TEMPLATE.replace("__SUBJECT_TYPE__", "carrier")
    .replace("__SUBJECT__", "carrier_id")
    .replace("__EXCLUDED__", "SELECT NULL::VARCHAR AS carrier_id, NULL::BIGINT AS hod WHERE false")
)
TRAFFIC_DESTINATION_SQL = (
    _TRAFFIC_TEMPLATE.replace("__SUBJECT_TYPE__", "destination")
    .replace("__SUBJECT__", "destination")
    .replace(
        "__EXCLUDED__",
        "SELECT subject AS carrier_id, hour(window_start) AS hod FROM candidates "
        "WHERE rule = 'traffic_anomaly' AND subject_type = 'carrier'",
    )
)

# The first calls of a group (by start time, then call id), as many as an alert samples:
# a top-n aggregate, not a sorted list of every call of the group.
_FIRST_CALLS = "arg_min(call_id, {t: start_time, id: call_id}, greatest($sample_size, 1))"

LONG_CALL_SQL = f"""
SELECT 'long_call' AS rule,
    CASE WHEN max(duration_seconds) >= $error_seconds THEN 'ERROR' ELSE 'WARN' END AS severity,
    'caller' AS subject_type, coalesce(caller_number, '(no caller number)') AS subject,
    min(start_time) AS window_start, max(end_time) AS window_end,
    to_json({{calls: count(*), longest_seconds: max(duration_seconds),
        total_seconds: sum(duration_seconds)}})::VARCHAR AS metrics,
    to_json({{max_seconds: $max_seconds, error_seconds: $error_seconds}})::VARCHAR AS baseline,
    {_FIRST_CALLS} AS sample_call_ids,
    max(duration_seconds) / $max_seconds AS score,
    format('{{}} made {{}} call(s) over {{}} h, the longest {{}} h {{}} min', subject, count(*),
        round($max_seconds / 3600, 1), max(duration_seconds) // 3600,
        max(duration_seconds) % 3600 // 60) AS summary
FROM day_calls
WHERE duration_seconds > $max_seconds
GROUP BY subject
"""

SELF_CALL_SQL = f"""
SELECT 'self_call' AS rule,
    CASE WHEN count(*) >= $error_calls THEN 'ERROR' ELSE 'WARN' END AS severity,
    'caller' AS subject_type, caller_number AS subject,
    min(start_time) AS window_start, max(end_time) AS window_end,
    to_json({{calls: count(*), seconds: sum(duration_seconds)}})::VARCHAR AS metrics,
    to_json({{error_calls: $error_calls}})::VARCHAR AS baseline,
    {_FIRST_CALLS} AS sample_call_ids,
    count(*)::DOUBLE AS score,
    format('{{}} called its own number {{}} time(s)', subject, count(*)) AS summary
FROM day_calls
WHERE list_contains(flags, 'self_call') AND caller_number IS NOT NULL
GROUP BY subject
"""

# A carrier's calls priced below cost, per cdrs file (kept like the traffic cells): sums,
# extremes, the distinct prefixes and destinations and the first calls, as many as an alert
# may sample. The day's alert merges its files' parts, so a late file costs its own rows.
NEGATIVE_MARGIN_FILE_SQL = f"""
SELECT carrier_id, count(*) AS calls, sum(margin) AS margin, min(margin) AS worst_margin,
    min(start_time) AS first_start, max(end_time) AS last_end,
    list(DISTINCT rate_prefix) FILTER (WHERE rate_prefix IS NOT NULL) AS rate_prefixes,
    list(DISTINCT called_country) FILTER (WHERE called_country IS NOT NULL) AS destinations,
    arg_min({{t: start_time, id: call_id}}, {{t: start_time, id: call_id}},
        {MAX_SAMPLE_CALL_IDS}) AS first_calls
FROM file_cdrs
WHERE margin < 0
GROUP BY carrier_id
"""
NEGATIVE_MARGIN_VERSION = "1"  # part of the parts' cache key: change it with the query
NEGATIVE_MARGIN_DIR = DAY_CACHE_DIRS[3]  # under the warehouse's _state folder

NEGATIVE_MARGIN_SQL = """
SELECT 'negative_margin' AS rule,
    CASE WHEN -sum(margin) >= CAST($error_loss AS DECIMAL(38, 6)) THEN 'ERROR' ELSE 'WARN' END
        AS severity,
    'carrier' AS subject_type, carrier_id AS subject,
    min(first_start) AS window_start, max(last_end) AS window_end,
    to_json({calls: sum(calls)::BIGINT, loss: (-sum(margin))::VARCHAR,
        worst_margin: min(worst_margin)::VARCHAR,
        rate_prefixes: list_sort(list_distinct(flatten(list(rate_prefixes)))),
        destinations: list_sort(list_distinct(flatten(list(destinations))))})::VARCHAR
        AS metrics,
    to_json({error_loss: $error_loss})::VARCHAR AS baseline,
    list_transform(list_slice(list_sort(flatten(list(first_calls))), 1, $sample_size),
        lambda c: c.id) AS sample_call_ids,
    (-sum(margin))::DOUBLE / greatest(CAST($error_loss AS DOUBLE), 0.01) AS score,
    format('{} carried {} call(s) priced below cost: loss {}, worst call {}', subject,
        sum(calls)::BIGINT, -sum(margin), min(worst_margin)) AS summary
FROM negative_margin_parts
GROUP BY subject
"""

# Each rule: statements preparing its work (run as they are), then the queries whose rows
# are its alerts (in this order: destinations are judged after the carriers' alerts exist).
RULE_SQL: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "wangiri": ((), (WANGIRI_SQL,)),
    "irsf": ((), (IRSF_SQL,)),
    "spend_velocity": ((), (SPEND_VELOCITY_SQL,)),
    "traffic_anomaly": ((), (TRAFFIC_CARRIER_SQL, TRAFFIC_DESTINATION_SQL)),
    "long_call": ((), (LONG_CALL_SQL,)),
    "self_call": ((), (SELF_CALL_SQL,)),
    "negative_margin": ((), (NEGATIVE_MARGIN_SQL,)),
}

_CANDIDATES = f"CREATE OR REPLACE TEMP TABLE candidates ({ALERT_COLUMNS})"

_INSERT = """
INSERT INTO candidates BY NAME
SELECT CAST($day_date AS DATE) AS call_date,
    md5(concat_ws('|', rule, subject_type, subject,
        strftime(window_start, '%Y-%m-%dT%H:%M:%S.%fZ'))) AS alert_id,
    rule, severity, subject_type, subject, window_start, window_end, metrics, baseline,
    list_slice(sample_call_ids, 1, $sample_size) AS sample_call_ids, round(score, 4) AS score,
    summary, $config_version AS config_version
FROM ({query})
"""

_ORDER = "window_start, rule, subject_type, subject, alert_id"


# -- parameters --------------------------------------------------------------------------


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _money(value: object) -> str:
    return str(value)


def _rule_params(config: FraudConfig, rule: str, day: date) -> dict[str, Any]:
    """Every parameter a rule's SQL may use (the statement takes the ones it names)."""
    start = _midnight(day)
    params: dict[str, Any] = {
        "day_date": day,
        "day_start": start,
        "sample_size": config.alerts.sample_call_ids,
        "config_version": config.version(),
    }
    if rule == "wangiri":
        c = config.wangiri
        window = timedelta(minutes=c.window_minutes)
        params |= {
            "window_minutes": c.window_minutes,
            "tail_from": start - 2 * window,
            "reliable_from": start - window,
            "max_short_seconds": c.max_short_seconds,
            "min_short_calls": c.min_short_calls,
            "min_distinct_called": c.min_distinct_called,
            "min_short_share": c.min_short_share,
            "error_distinct_called": c.error_distinct_called,
        }
    elif rule == "irsf":
        i = config.irsf
        window = timedelta(minutes=i.window_minutes)
        digits = [p.removeprefix("+") for p in i.high_risk_prefixes]
        params |= {
            "window_minutes": i.window_minutes,
            "tail_from": start - 2 * window,
            "reliable_from": start - window,
            "use_prefixes": bool(digits),
            # Prefixes are digits only (checked when the file is read).
            "prefix_pattern": r"^\+(" + "|".join(sorted(digits, key=lambda d: (-len(d), d))) + ")"
            if digits
            else "^$",
            "premium_rate": i.premium_rate,
            "min_calls": i.min_calls,
            "min_minutes": i.min_minutes,
            "min_spend": _money(i.min_spend),
            "error_minutes": i.error_minutes,
            "error_spend": _money(i.error_spend),
        }
    elif rule == "spend_velocity":
        s = config.spend_velocity
        params |= {
            "baseline_from": day - timedelta(days=s.baseline_days),
            "baseline_days": s.baseline_days,
            "baseline_quantile": s.baseline_quantile,
            "min_baseline_hours": s.min_baseline_hours,
            "min_calls": s.min_calls,
            "min_spend": _money(s.min_spend),
            "error_spend": _money(s.error_spend),
            "ratio": s.ratio,
            "off_hours_weight": s.off_hours_weight,
            "extra_weight": s.off_hours_weight - 1.0,
            "business_start_hour": s.business_start_hour,
            "business_end_hour": s.business_end_hour,
            "business_days": list(s.business_days),
        }
    elif rule == "traffic_anomaly":
        t = config.traffic_anomaly
        params |= {
            "subjects": list(t.subjects),
            "metrics": list(t.metrics),
            "min_baseline_days": t.min_baseline_days,
            "min_hour_calls": t.min_hour_calls,
            "z_warn": t.z_warn,
            "z_error": t.z_error,
            "min_relative_change": t.min_relative_change,
            "min_asr_change": t.min_asr_change,
            "collapse_ratio": t.collapse_ratio,
        }
    elif rule == "long_call":
        params |= {
            "max_seconds": config.long_call.max_seconds,
            "error_seconds": config.long_call.error_seconds,
        }
    elif rule == "self_call":
        params |= {"error_calls": config.self_call.error_calls}
    elif rule == "negative_margin":
        params |= {"error_loss": _money(config.negative_margin.error_loss)}
    return params


def _bind(sql: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters ``sql`` names (DuckDB refuses extra ones)."""
    names = set(_PARAM_RE.findall(sql))
    missing = names - set(params)
    if missing:
        raise KeyError(f"no value for SQL parameters {sorted(missing)}")
    return {name: params[name] for name in names}


# -- files -------------------------------------------------------------------------------


def check_day(day: str) -> date:
    """A call date partition key, refused unless it is a real date (it reaches file names)."""
    if not _DAY_RE.fullmatch(day):
        raise ValueError(f"not a call date (YYYY-MM-DD): {day!r}")
    return date.fromisoformat(day)


def alerts_file(warehouse: Warehouse, day: str) -> Path:
    """``<warehouse>/fraud_alerts/<YYYY-MM-DD>.parquet``."""
    check_day(day)
    return warehouse.root / TABLE / f"{day}.parquet"


def alert_days(warehouse: Warehouse) -> list[str]:
    folder = warehouse.root / TABLE
    return sorted(p.stem for p in folder.glob("*.parquet")) if folder.exists() else []


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # hours and dates are UTC, whatever the machine's
    con.execute("SET enable_progress_bar = false")
    return con


def _trailing_days(config: FraudConfig) -> int:
    return config.spend_velocity.baseline_days


def _window_days(day: date, days: int) -> list[str]:
    """The call dates a day's rules read: the ``days`` trailing days, then the day."""
    return [(day - timedelta(days=k)).isoformat() for k in range(days, -1, -1)]


# A caller rule's subject: the caller number (long_call names a call without one so).
_NO_CALLER = "'(no caller number)'"
_CALLER_SUBJECT = f"coalesce(caller_number, {_NO_CALLER})"
# The columns the caller rules read (CALLER_RULES), kept when only some callers are judged.
_CALLER_COLUMNS = """call_id, caller_number, called_number, called_number_type, call_type,
    call_date, start_time, end_time, local_start_time, duration_seconds, disposition, cost,
    flags"""


def _open_sources(
    con: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    day: date,
    days: int,
    touched_only: bool = False,
) -> bool:
    """Views ``day_calls``, ``recent_calls`` (with the day before) and ``span_calls`` (with
    the ``days`` trailing days); False when the day has no calls. ``touched_only``: only
    the calls of the subjects in the table ``touched``, read once into a table."""
    *before, today = [warehouse.table_files_for_day(key) for key in _window_days(day, days)]
    if not today:
        return False
    previous = before[-1] if before else []
    trailing = [path for paths in before for path in paths]
    sources = {"day_calls": today, "recent_calls": previous + today, "span_calls": trailing + today}
    if touched_only:
        row = con.execute(f"SELECT count(*) FROM touched WHERE subject = {_NO_CALLER}").fetchone()
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE touched_calls AS SELECT {_CALLER_COLUMNS} "
            f"FROM {read_parquet_sql(trailing + today)} "
            "WHERE caller_number IN (SELECT subject FROM touched)"
            f" OR (caller_number IS NULL AND {bool(row and row[0])})"
        )
        # Each view's days (a cdrs file holds the calls of its folder's call date).
        first = {"day_calls": day, "recent_calls": day - timedelta(days=min(days, 1))}
        for view in sources:
            since = first.get(view, day - timedelta(days=days))
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM touched_calls "
                f"WHERE call_date >= DATE '{since.isoformat()}'"
            )
        return True
    for view, files in sources.items():
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {read_parquet_sql(files)}"
        )
    return True


def _open_traffic_cells(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, day: date, days: int
) -> None:
    """Table ``traffic_cells``: the cells of ``day`` (which has calls) and the ``days``
    before it."""
    paths = [
        path
        for k in range(days, -1, -1)
        for path in day_file_aggregates(
            con,
            warehouse,
            TRAFFIC_CELLS_DIR,
            (day - timedelta(days=k)).isoformat(),
            TRAFFIC_FILE_CELLS_SQL,
            TRAFFIC_CELLS_VERSION,
        )
    ]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE traffic_cells AS "
        "SELECT call_date, hod, carrier_id, destination, sum(calls)::BIGINT AS calls, "
        "sum(answered)::BIGINT AS answered, sum(answered_seconds)::BIGINT AS answered_seconds "
        f"FROM {read_parquet_sql(paths)} GROUP BY ALL ORDER BY ALL"
    )


def _open_negative_margin_parts(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, day: date
) -> None:
    """View ``negative_margin_parts``: the parts of each cdrs file of ``day`` (which has
    calls)."""
    paths = day_file_aggregates(
        con,
        warehouse,
        NEGATIVE_MARGIN_DIR,
        day.isoformat(),
        NEGATIVE_MARGIN_FILE_SQL,
        NEGATIVE_MARGIN_VERSION,
    )
    con.execute(
        "CREATE OR REPLACE TEMP VIEW negative_margin_parts AS SELECT * FROM "
        + read_parquet_sql(paths)
    )


# -- detection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """The fields the snooze and the outlet need; the rest stays in the table."""

    alert_id: str
    rule: str
    severity: str
    subject_type: str
    subject: str
    window_start: datetime
    window_end: datetime

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule, self.subject_type, self.subject)


def _detect(
    con: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    config: FraudConfig,
    day: date,
    rules: Iterable[str],
) -> None:
    """Add the alerts ``rules`` find in the open sources to the table ``candidates``."""
    for rule in rules:
        if not config.enabled(rule):
            continue
        params = _rule_params(config, rule, day)
        if rule == "traffic_anomaly":
            _open_traffic_cells(con, warehouse, day, config.traffic_anomaly.baseline_days)
        if rule == "negative_margin":
            _open_negative_margin_parts(con, warehouse, day)
        if rule == "spend_velocity":
            con.execute(SPEND_CANDIDATES_SQL, _bind(SPEND_CANDIDATES_SQL, params))
            found = con.execute("SELECT count(*) FROM spend_candidates").fetchone()
            if not found or not found[0]:
                continue
        prepare, queries = RULE_SQL[rule]
        for sql in prepare:
            con.execute(sql, _bind(sql, params))
        for query in queries:
            sql = _INSERT.format(query=query)
            con.execute(sql, _bind(sql, params))


def _candidates(con: duckdb.DuckDBPyConnection) -> list[Alert]:
    rows = con.execute(
        "SELECT alert_id, rule, severity, subject_type, subject, window_start, window_end "
        f"FROM candidates ORDER BY {_ORDER}"
    ).fetchall()
    return [Alert(*row) for row in rows]


# -- the day's candidates, kept for the next run ------------------------------------------
#
# A caller rule's alerts about a caller are a function of that caller's calls alone (in the
# day, the day before and the trailing days) and of the thresholds. So when a run only adds
# cdrs files to those days, the callers whose alerts can change are the callers of the new
# files: their calls are judged again, every other caller keeps the alerts (before the
# snooze) the last run found. Any other change (a file rewritten or removed, other
# thresholds, another version of the rules) judges every caller again. The other rules
# (traffic_anomaly, negative_margin: carriers and destinations) always judge the whole day.

CALLER_RULES = ("wangiri", "irsf", "spend_velocity", "long_call", "self_call")
CANDIDATES_VERSION = "1"  # part of the signature: change it when a caller rule's SQL changes
CANDIDATES_DIR = DAY_CACHE_DIRS[2]  # under _state: <day>/state.json, <key>.parquet


def _signature(warehouse: Warehouse, day: date, config: FraudConfig) -> dict[str, Any]:
    """What a day's candidates are a function of: rules, thresholds, the files they read."""
    files = {}
    for key in _window_days(day, _trailing_days(config)):
        for path in warehouse.table_files_for_day(key):
            stat = path.stat()
            files[f"{key}/{path.name}"] = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    return {"version": CANDIDATES_VERSION, "config": config.version(), "files": files}


def _kept_candidates(
    warehouse: Warehouse, day: str, signature: Mapping[str, Any]
) -> tuple[Path, list[Path]] | None:
    """The last run's candidates file and the files added since, when only files were added."""
    folder = warehouse.state_dir / CANDIDATES_DIR / day
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        kept = folder / str(state["candidates"])
        old = state["signature"]
        old_files = dict(old["files"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # none kept, or not in this release's layout: judge every caller
    files = signature["files"]
    if (
        not kept.exists()
        or {k: v for k, v in old.items() if k != "files"}
        != {k: v for k, v in signature.items() if k != "files"}
        or any(files.get(name) != stat for name, stat in old_files.items())
    ):
        return None
    added = [
        warehouse.cdrs_file(day_key, Path(file).stem)
        for day_key, file in (name.split("/") for name in sorted(set(files) - set(old_files)))
    ]
    return kept, added


def _keep_candidates(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, day: str, signature: Mapping[str, Any]
) -> None:
    """Write the table ``candidates`` and its signature for the next run of the day."""
    folder = warehouse.state_dir / CANDIDATES_DIR / day
    text = json.dumps(signature, sort_keys=True)
    name = hashlib.sha256(text.encode()).hexdigest()[:20] + ".parquet"
    copy_to_parquet_atomic(con, f"SELECT * FROM candidates ORDER BY {_ORDER}", folder / name)
    state = json.dumps({"candidates": name, "signature": signature}, sort_keys=True)
    write_text_atomic(folder / "state.json", state)
    for stale in folder.glob("*.parquet"):
        if stale.name != name:
            stale.unlink(missing_ok=True)


def _detect_from_kept(
    con: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    config: FraudConfig,
    day: date,
    kept: Path,
    added: list[Path],
) -> int:
    """The day's candidates from the kept ones and the callers of ``added``; callers judged."""
    source = read_parquet_sql(added) if added else "(SELECT NULL::VARCHAR AS caller_number)"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE touched AS SELECT DISTINCT {_CALLER_SUBJECT} AS subject "
        f"FROM {source} WHERE {bool(added)}"
    )
    con.execute(
        f"INSERT INTO candidates SELECT * FROM {read_parquet_sql([kept])} "
        "WHERE list_contains($rules, rule) AND subject NOT IN (SELECT subject FROM touched)",
        {"rules": list(CALLER_RULES)},
    )
    _detect(con, warehouse, config, day, [r for r in RULES if r not in CALLER_RULES])
    _open_sources(con, warehouse, day, _trailing_days(config), touched_only=True)
    _detect(con, warehouse, config, day, CALLER_RULES)
    row = con.execute("SELECT count(*) FROM touched").fetchone()
    return int(row[0]) if row else 0


def snooze(
    candidates: Sequence[Alert], earlier: Sequence[Alert], config: FraudConfig
) -> tuple[list[Alert], list[Alert]]:
    """(raised, snoozed): ``candidates`` in time order against the last raised alert of
    their rule and subject (from ``earlier`` days, then from the day itself)."""
    last: dict[tuple[str, str, str], Alert] = {}
    for alert in sorted(earlier, key=lambda a: (a.window_start, a.alert_id)):
        last[alert.key] = alert
    raised: list[Alert] = []
    snoozed: list[Alert] = []
    for alert in sorted(candidates, key=lambda a: (a.window_start, a.alert_id)):
        previous = last.get(alert.key)
        quiet_until = (
            previous.window_end + timedelta(hours=config.snooze_hours(alert.rule))
            if previous
            else None
        )
        if (
            previous is not None
            and quiet_until is not None
            and alert.window_start < quiet_until
            and SEVERITY_RANK[alert.severity] <= SEVERITY_RANK[previous.severity]
        ):
            snoozed.append(alert)
            continue
        raised.append(alert)
        last[alert.key] = alert
    return raised, snoozed


def _earlier_alerts(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, day: date, config: FraudConfig
) -> list[Alert]:
    """Alerts raised on the days a snooze can reach back to (before ``day``)."""
    longest = max(config.snooze_hours(rule) for rule in RULES)
    reach = math.ceil(longest / 24) + 1
    paths = [
        alerts_file(warehouse, (day - timedelta(days=k)).isoformat()) for k in range(reach, 0, -1)
    ]
    paths = [p for p in paths if p.exists()]
    if not paths:
        return []
    rows = con.execute(
        "SELECT alert_id, rule, severity, subject_type, subject, window_start, window_end "
        f"FROM {read_parquet_sql(paths)} ORDER BY {_ORDER}"
    ).fetchall()
    return [Alert(*row) for row in rows]


@dataclass(frozen=True)
class DayAlerts:
    """What a day's detection wrote."""

    day: str
    path: Path | None  # None when the day has no calls (and so no alert file)
    raised: list[Alert] = field(default_factory=list)
    snoozed: list[Alert] = field(default_factory=list)
    config_version: str = ""
    callers_judged: int | None = None  # None: every subject judged; else the callers of
    # the files added since the last refresh, the rest kept from it

    def count(self, severity: str | None = None, rule: str | None = None) -> int:
        return sum(
            1
            for a in self.raised
            if (severity is None or a.severity == severity) and (rule is None or a.rule == rule)
        )

    def by_rule(self) -> dict[str, int]:
        return {rule: self.count(rule=rule) for rule in RULES if self.count(rule=rule)}


def detect_day(
    warehouse: Warehouse, day: str, config: FraudConfig, rules: Iterable[str] = RULES
) -> list[Alert]:
    """The day's alerts before the snooze, every subject judged (nothing written but the
    traffic cells' cache)."""
    when = check_day(day)
    with _connect() as con:
        if not _open_sources(con, warehouse, when, _trailing_days(config)):
            return []
        con.execute(_CANDIDATES)
        _detect(con, warehouse, config, when, rules)
        return _candidates(con)


def refresh_day(warehouse: Warehouse, day: str, config: FraudConfig) -> DayAlerts:
    """Detect, snooze and write the day's alerts; returns what was raised and snoozed.

    Only the callers of files added since the day's last refresh are judged again (see
    ``CALLER_RULES``). Call under the writer lock. Days are meant to be refreshed in date
    order: the snooze of a day reads the alert files of the days before it.
    """
    when = check_day(day)
    path = alerts_file(warehouse, day)
    with _connect() as con:
        if not _open_sources(con, warehouse, when, _trailing_days(config)):
            remove_file(path)
            shutil.rmtree(warehouse.state_dir / CANDIDATES_DIR / day, ignore_errors=True)
            return DayAlerts(day, None, config_version=config.version())
        signature = _signature(warehouse, when, config)
        con.execute(_CANDIDATES)
        found = _kept_candidates(warehouse, day, signature)
        judged = None
        if found is None:
            _detect(con, warehouse, config, when, RULES)
        else:
            judged = _detect_from_kept(con, warehouse, config, when, *found)
        _keep_candidates(con, warehouse, day, signature)
        candidates = _candidates(con)
        raised, snoozed = snooze(candidates, _earlier_alerts(con, warehouse, when, config), config)
        copy_to_parquet_atomic(
            con,
            f"SELECT * FROM candidates WHERE list_contains($raised, alert_id) ORDER BY {_ORDER}",
            path,
            {"raised": [a.alert_id for a in raised]},
        )
    return DayAlerts(day, path, raised, snoozed, config.version(), judged)


# -- reading -----------------------------------------------------------------------------


def read_alerts(paths: Sequence[Path], min_severity: str = "WARN") -> list[dict[str, Any]]:
    """Alert rows as JSON-ready dicts (instants in ISO 8601, metrics and baseline parsed),
    in day and time order."""
    paths = [p for p in paths if p.exists()]
    if not paths:
        return []
    floor = SEVERITY_RANK[min_severity]
    with _connect() as con:
        cursor = con.execute(
            f"SELECT * FROM {read_parquet_sql(paths)} ORDER BY call_date, {_ORDER}"
        )
        names = [d[0] for d in cursor.description or []]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    out = []
    for row in rows:
        if SEVERITY_RANK.get(row["severity"], 0) < floor:
            continue
        row["call_date"] = row["call_date"].isoformat()
        for key in ("window_start", "window_end"):
            row[key] = row[key].astimezone(UTC).isoformat().replace("+00:00", "Z")
        row["metrics"] = json.loads(row["metrics"])
        row["baseline"] = json.loads(row["baseline"])
        row["sample_call_ids"] = list(row["sample_call_ids"] or [])
        out.append(row)
    return out


def top_alerts(rows: Sequence[Mapping[str, Any]], limit: int = 10) -> list[Mapping[str, Any]]:
    """The alerts an operator should read first: errors, then by score, then by time."""
    return sorted(
        rows,
        key=lambda r: (-SEVERITY_RANK[r["severity"]], -float(r["score"] or 0), r["window_start"]),
    )[:limit]


# -- outlets ------------------------------------------------------------------------------


class OutletError(RuntimeError):
    """An outlet did not take a batch of alerts (nothing of the batch counts as delivered)."""


def _alert_line(alert: Mapping[str, Any]) -> str:
    return json.dumps(alert, sort_keys=True, separators=(",", ":"), default=str)


def deliver_ndjson(path: Path, alerts: Sequence[Mapping[str, Any]]) -> None:
    """Append one JSON object a line to ``path`` (created with its folder), flushed to disk."""
    if not alerts:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("".join(_alert_line(a) + "\n" for a in alerts))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise OutletError(f"cannot append to {path}: {exc}") from exc


def deliver_http(url: str, alerts: Sequence[Mapping[str, Any]], timeout_seconds: float) -> None:
    """POST ``{"alerts": [...]}`` as JSON to ``url``; any answer but 2xx is a failure.

    The ``Idempotency-Key`` header is a hash of the batch's alert ids, so a receiver can
    drop a batch it took before (a POST that timed out after the receiver stored it).
    """
    if not alerts:
        return
    body = json.dumps({"alerts": list(alerts)}, sort_keys=True, default=str).encode()
    key = hashlib.sha256("\n".join(str(a["alert_id"]) for a in alerts).encode()).hexdigest()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "User-Agent": "cdr-pipeline fraud_alert_outlet",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
            status = response.status
            response.read()
    except urllib.error.HTTPError as exc:
        raise OutletError(f"POST {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise OutletError(f"POST {url}: {exc}") from exc
    if not 200 <= status < 300:
        raise OutletError(f"POST {url}: HTTP {status}")


__all__ = [
    "ALERT_COLUMNS",
    "RULES",
    "RULE_SQL",
    "SEVERITY_RANK",
    "TABLE",
    "Alert",
    "DayAlerts",
    "OutletError",
    "alert_days",
    "alerts_file",
    "check_day",
    "deliver_http",
    "deliver_ndjson",
    "detect_day",
    "read_alerts",
    "refresh_day",
    "snooze",
    "top_alerts",
]
