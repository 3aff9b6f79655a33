"""Sample data written for this project, and the loader that puts it in the database."""
