"""Smart monitoring (智能监控): behaviour rules over grouped records."""
