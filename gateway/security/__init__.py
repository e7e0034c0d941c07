"""Authentication of webhooks and media streams: nobody spends the owner's Gemini quota but their callers."""
