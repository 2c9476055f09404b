"""The dashboard's static page: HTML, ES modules and CSS served by `routes/dashboard.py`."""
