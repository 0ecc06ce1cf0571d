"""The Analytics tab: usage rollups, the selectors behind every figure, and the tab's views (issue 10)."""
