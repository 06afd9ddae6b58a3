"""Fetching and reading web pages: address policy, HTTP, robots.txt, HTML text, crawling."""
