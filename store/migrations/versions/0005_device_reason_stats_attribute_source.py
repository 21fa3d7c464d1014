"""device disable reason and driver stats; attributes unique per deployable and key, with their source

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('devices') as batch:
        batch.add_column(sa.Column('status_reason', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))
        batch.add_column(sa.Column('stats', sa.JSON(), nullable=True))
    # Keep the newest row of any duplicated (deployable, key) before the constraint goes on.
    op.execute("""
        DELETE FROM attributes WHERE id NOT IN (
            SELECT MAX(id) FROM attributes GROUP BY deployable_id, key)
    """)
    with op.batch_alter_table('attributes') as batch:
        batch.add_column(sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False,
                                   server_default='driver'))
        batch.create_unique_constraint('uq_attribute_deployable_key', ['deployable_id', 'key'])


def downgrade() -> None:
    with op.batch_alter_table('attributes') as batch:
        batch.drop_constraint('uq_attribute_deployable_key', type_='unique')
        batch.drop_column('source')
    with op.batch_alter_table('devices') as batch:
        batch.drop_column('stats')
        batch.drop_column('status_reason')
