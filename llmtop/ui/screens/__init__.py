"""Modal and full screens: help, confirmation, server pick list, "no server found"."""
