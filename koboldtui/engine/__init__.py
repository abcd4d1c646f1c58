"""The inference engine: continuous batching over llama.cpp.

Importing this package does NOT import llama_cpp; only ``koboldtui.engine.llama``
(and modules it imports) do, so the API, Horde and TUI code can use the data types in
``koboldtui.engine.types`` without loading the native library.
"""
