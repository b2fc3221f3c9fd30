"""The collector's HTTP face: the JSON API and the dashboard for people.

Presentation only: every page and endpoint calls the domain (``collector.service``,
``collector.governance``, ``collector.reporting``...) and renders what it returns.
"""
