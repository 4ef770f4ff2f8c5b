"""Server-rendered web UI for customer-success managers, finance and auditors (zh-CN and English)."""
