"""The adversarial suite: every attack on a transfer fails, and changes nothing."""
