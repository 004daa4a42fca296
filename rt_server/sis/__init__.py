"""The student information system (SIS) seam: loading from it and handing imports back to it."""
