"""fedtiny.server"""
