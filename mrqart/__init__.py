"""mrqart: MR Quality Assurance in (near) Real Time."""

__version__ = "0.1.0"
