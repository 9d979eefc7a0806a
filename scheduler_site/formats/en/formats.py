"""Date formats of the admin: to the second, and labelled with the zone.

Django's English default ("Nov. 28, 2026, 8 a.m.") drops the seconds and the
zone, so an operator cannot tell 08:00:00 UTC from 08:00:59 in Berlin.
Settings' TIME_ZONE is UTC, so ``T`` prints "UTC"; times that belong to a
task are shown in the task's own zone by tasks_app/admin_times.py.
"""

DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_INPUT_FORMATS = ["%Y-%m-%d"]
DATETIME_INPUT_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M", "%Y-%m-%d"]
FIRST_DAY_OF_WEEK = 1
