//! LLM backends behind [`kizuna_agent::llm::LanguageModel`]:
//! - [`local`]: an in-process quantized GGUF model on the CPU (candle), the default;
//! - [`openai`]: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM,
//!   llama.cpp server, Ollama).

pub mod local;
pub mod openai;
pub mod qwen2;
