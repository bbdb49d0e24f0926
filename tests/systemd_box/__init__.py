"""A confined real systemd user manager + journald for tests (see box.sh and box.py)."""
