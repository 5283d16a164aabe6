-- Bots: replies that could not be sent, and fast lookups of one-time codes.

-- A reply (or one-time code) the Graph API or Telegram refused after every
-- retry, with the reason; the inbound message that caused it stays recorded
-- in webhook_events.
CREATE TABLE outbound_messages (
  id          TEXT PRIMARY KEY NOT NULL,
  provider    TEXT NOT NULL CHECK (provider IN ('whatsapp', 'telegram')),
  recipient   TEXT NOT NULL,
  body        TEXT NOT NULL,
  status      TEXT NOT NULL CHECK (status IN ('failed')),
  attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  last_error  TEXT NOT NULL,
  event_id    TEXT,
  created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX idx_outbound_messages_created ON outbound_messages (created_at);

-- The latest pending code of a user for a phone.
CREATE INDEX idx_otp_codes_user_phone ON otp_codes (user_id, phone, created_at DESC);
