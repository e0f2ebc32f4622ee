"""fedtiny.ondevice"""
