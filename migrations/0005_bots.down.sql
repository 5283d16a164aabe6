DROP INDEX idx_otp_codes_user_phone;
DROP TABLE outbound_messages;
