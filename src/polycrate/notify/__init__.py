"""What happens after a run: webhooks, mail and chat channels, metrics, the Polycrate event."""
