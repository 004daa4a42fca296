"""The district server: peer service, registrar service, delivery worker and database."""
