"""Scheduled training: cron schedules, durable fire claims, launching runs, webhooks."""
