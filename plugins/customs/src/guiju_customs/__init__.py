"""guiju-customs: Commercial invoice, packing list, proforma invoice and export declaration drafts."""
