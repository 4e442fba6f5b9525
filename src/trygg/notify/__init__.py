"""trygg.notify"""
