"""One live phone call: the bridge between a provider's media stream and a Gemini Live session."""
