"""Reports (报告): the settlement report and the scheme what-if."""
