"""tidemark: real-time customer and cloud-cost event processing on Apache Flink."""
