"""fedtiny.link"""
