"""Small widgets of the app's frame (title line, footer, tab panes, the overview's log tail)."""
