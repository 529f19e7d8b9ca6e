"""guiju-erp: Multi-entity invoicing, reconciliation, Odoo sync and accounting export."""
