"""The time expressions schedules are written in: systemd OnCalendar, cron, timespans. Pure functions."""
