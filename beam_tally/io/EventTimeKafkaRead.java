package beamtally.kafka;

import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.beam.sdk.expansion.ExternalTransformRegistrar;
import org.apache.beam.sdk.io.kafka.KafkaIO;
import org.apache.beam.sdk.io.kafka.KafkaRecord;
import org.apache.beam.sdk.io.kafka.TimestampPolicy;
import org.apache.beam.sdk.io.kafka.TimestampPolicyFactory;
import org.apache.beam.sdk.transforms.ExternalTransformBuilder;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PBegin;
import org.apache.beam.sdk.values.PCollection;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.joda.time.Instant;

/**
 * Beam's KafkaIO read, for beam-tally's Python jobs (cross-language), with event time from the
 * record timestamps and a watermark that the producers drive.
 *
 * <p>KafkaIO's built-in cross-language policies cannot replay logs: "CreateTime" has no delay
 * and, like "LogAppendTime", moves an idle partition's watermark to the wall clock, which makes
 * every later record of a replayed (past) hour late. Here a partition's watermark is the
 * smallest of the watermarks its producers last wrote into it: each producer writes a marker
 * record (key starting with {@code MARKER_PREFIX}, its id after it) into every partition of the
 * topic now and then, timestamped with its own watermark (its newest line less --max_delay);
 * its last marker has the value {@code "end"} and no longer holds the partition back. A
 * partition no producer writes to has markers all the same, so it never holds the job back.
 */
public class EventTimeKafkaRead implements ExternalTransformRegistrar {
  public static final String URN = "beam:transform:beam-tally:kafka_read_event_time:v1";
  public static final String MARKER_PREFIX = "\u0000beam-tally-watermark:";

  @Override
  public Map<String, ExternalTransformBuilder<?, ?, ?>> knownBuilderInstances() {
    return Map.of(URN, new Builder());
  }

  /** What the Python side sends, field by field (Beam maps snake_case to these setters). */
  public static class Configuration {
    private Map<String, String> consumerConfig;
    private List<String> topics;
    private Boolean commitOffsetInFinalize;
    private Long producers;

    public void setConsumerConfig(Map<String, String> consumerConfig) {
      this.consumerConfig = consumerConfig;
    }

    public void setTopics(List<String> topics) {
      this.topics = topics;
    }

    public void setCommitOffsetInFinalize(Boolean commitOffsetInFinalize) {
      this.commitOffsetInFinalize = commitOffsetInFinalize;
    }

    public void setProducers(Long producers) {
      this.producers = producers;
    }
  }

  public static class Builder
      implements ExternalTransformBuilder<
          Configuration, PBegin, PCollection<KV<byte[], byte[]>>> {
    @Override
    public PTransform<PBegin, PCollection<KV<byte[], byte[]>>> buildExternal(Configuration c) {
      KafkaIO.Read<byte[], byte[]> read =
          KafkaIO.<byte[], byte[]>read()
              .withBootstrapServers(c.consumerConfig.get("bootstrap.servers"))
              .withTopics(c.topics)
              .withKeyDeserializer(ByteArrayDeserializer.class)
              .withValueDeserializer(ByteArrayDeserializer.class)
              .withConsumerConfigUpdates(Map.copyOf(c.consumerConfig))
              .withTimestampPolicyFactory(
                  new MarkerPolicyFactory(c.producers == null ? 1 : c.producers.intValue()));
      if (Boolean.TRUE.equals(c.commitOffsetInFinalize)) {
        read = read.commitOffsetsInFinalize();
      }
      return read.withoutMetadata();
    }
  }

  static class MarkerPolicyFactory implements TimestampPolicyFactory<byte[], byte[]> {
    private final int producers;

    MarkerPolicyFactory(int producers) {
      this.producers = producers;
    }

    @Override
    public TimestampPolicy<byte[], byte[]> createTimestampPolicy(
        TopicPartition partition, Optional<Instant> previousWatermark) {
      // A restored reader starts from its checkpoint's watermark and trusts the producers it
      // sees from there: one that ended before the checkpoint writes nothing more.
      boolean restored =
          previousWatermark.isPresent()
              && previousWatermark.get().isAfter(BoundedWindow.TIMESTAMP_MIN_VALUE);
      int expected = restored ? 1 : producers;
      if (restored) {
        // A restart in the same JVM (Flink restarting a failed job) re-reads from the
        // checkpoint: the producers' newer watermarks seen before it must not hold.
        PRODUCERS.put(partition, new ConcurrentHashMap<>());
      }
      return new MarkerPolicy(
          partition, previousWatermark.orElse(BoundedWindow.TIMESTAMP_MIN_VALUE), expected);
    }
  }

  /**
   * KafkaIO makes a policy each time it resumes reading a partition; the producers' watermarks
   * are kept per partition for the life of the JVM, so they outlive one policy. After a restore
   * in a new JVM they start empty and the restored watermark is the floor.
   */
  static final Map<TopicPartition, Map<String, Long>> PRODUCERS = new ConcurrentHashMap<>();

  static class MarkerPolicy extends TimestampPolicy<byte[], byte[]> {
    private final Map<String, Long> producers;
    private final int expected;
    private Instant watermark;

    MarkerPolicy(TopicPartition partition, Instant previous, int expected) {
      this.producers = PRODUCERS.computeIfAbsent(partition, p -> new ConcurrentHashMap<>());
      this.watermark = previous;
      this.expected = expected;
    }

    @Override
    public Instant getTimestampForRecord(PartitionContext ctx, KafkaRecord<byte[], byte[]> record) {
      Instant at = new Instant(record.getTimestamp());
      byte[] key = record.getKV().getKey();
      String marker = markerProducer(key);
      if (marker != null) {
        byte[] value = record.getKV().getValue();
        boolean end = value != null && new String(value, java.nio.charset.StandardCharsets.UTF_8).equals("end");
        long millis = end ? BoundedWindow.TIMESTAMP_MAX_VALUE.getMillis() : at.getMillis();
        producers.merge(marker, millis, Math::max);
        advance();
        // A marker is dropped by the reader; its timestamp must not hold anything back.
        return watermark;
      }
      return at;
    }

    private void advance() {
      if (producers.size() < expected) {
        return; // a producer still to come may write lines older than the others' watermark
      }
      long low = Long.MAX_VALUE;
      for (long millis : producers.values()) {
        low = Math.min(low, millis);
      }
      if (low != Long.MAX_VALUE && low > watermark.getMillis()) {
        watermark = new Instant(low);
      }
    }

    @Override
    public Instant getWatermark(PartitionContext ctx) {
      advance();
      return watermark;
    }

    private static String markerProducer(byte[] key) {
      if (key == null || key.length < MARKER_PREFIX.length()) {
        return null;
      }
      String text = new String(key, java.nio.charset.StandardCharsets.UTF_8);
      return text.startsWith(MARKER_PREFIX) ? text.substring(MARKER_PREFIX.length()) : null;
    }
  }
}
