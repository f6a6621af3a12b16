"""The CopyJob operator: kopf wiring (thin) and pure planning, sizing, rendering, aggregation."""
