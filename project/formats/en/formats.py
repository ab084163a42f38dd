# Timestamps to the second everywhere (the admin's default, "Nov. 24, 2026, 3:05 a.m.", makes two
# ledger events of one minute look the same), in an order that sorts and reads the same anywhere.
DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
