"""guiju-messaging: Send e-mail and post to WeCom, DingTalk, Feishu/Lark and Slack robots."""
