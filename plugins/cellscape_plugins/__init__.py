"""The built-in plugins of cellscape, one subpackage per stage; each is registered through an entry point."""
