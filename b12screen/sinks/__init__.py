"""Sinks: what is built from screening results (the FHIR Flag, CDS Hooks cards)."""
