"""ACPI table builders shared by every machine profile."""
