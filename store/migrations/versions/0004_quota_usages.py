"""quota usage counters per project and device-profile group, filled from the ARQs that hold quota

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('quota_usages',
    sa.Column('project_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('device_profile_id', sa.Integer(), nullable=False),
    sa.Column('device_profile_group_id', sa.Integer(), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.Column('reserved', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'device_profile_id', 'device_profile_group_id',
                            name=op.f('pk_quota_usages'))
    )
    # What the ARQs already hold: BindStarted is reserved, Bound is used.
    op.execute("""
        INSERT INTO quota_usages (project_id, device_profile_id, device_profile_group_id, used, reserved)
        SELECT project_id, device_profile_id, device_profile_group_id,
               SUM(CASE WHEN state = 'Bound' THEN 1 ELSE 0 END),
               SUM(CASE WHEN state = 'BindStarted' THEN 1 ELSE 0 END)
        FROM extended_accelerator_requests
        WHERE project_id IS NOT NULL AND state IN ('Bound', 'BindStarted')
        GROUP BY project_id, device_profile_id, device_profile_group_id
    """)


def downgrade() -> None:
    op.drop_table('quota_usages')
